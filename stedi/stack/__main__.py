"""`python -m stedi.stack up|down|status|clean`."""

import sys

from stedi.config import Settings
from stedi.stack.pipeline import run
from stedi.stack.services import StackError, clean, down, status, up

COMMANDS = {
    "up": lambda: up(Settings()),
    "down": down,
    "status": status,
    "clean": clean,
    "run": lambda: sys.exit(run(Settings())),
}

if len(sys.argv) != 2 or sys.argv[1] not in COMMANDS:
    sys.exit(f"usage: python -m stedi.stack {'|'.join(COMMANDS)}")
try:
    COMMANDS[sys.argv[1]]()
except StackError as exc:
    sys.exit(f"error: {exc}")
