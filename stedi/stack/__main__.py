"""`python -m stedi.stack up|down|status|clean|run`, and `stop-job JOB`: make run's engine
stops that job, so that its wrapper can run it alone (docs/operations.md)."""

import sys
from functools import partial

from stedi.config import Settings
from stedi.stack.pipeline import run, stop_engine_job
from stedi.stack.services import StackError, clean, down, status, up

COMMANDS = {
    "up": lambda: up(Settings()),
    "down": down,
    "status": status,
    "clean": clean,
    "run": lambda: sys.exit(run(Settings())),
}

args = sys.argv[1:]
if len(args) == 1 and args[0] in COMMANDS:
    command = COMMANDS[args[0]]
elif len(args) == 2 and args[0] == "stop-job":
    command = partial(stop_engine_job, args[1])
else:
    sys.exit(f"usage: python -m stedi.stack {'|'.join(COMMANDS)}, or stop-job JOB")
try:
    command()
except StackError as exc:
    sys.exit(f"error: {exc}")
