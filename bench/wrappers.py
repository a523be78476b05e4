"""The three card wrappers side by side, as a course user runs them, with no data arriving.

./submit-redis.sh, ./submit-event.sh and ./submit-join.sh each start their own driver
on empty topics of their own; after BENCH_WRAPPERS_SETTLE_SECONDS, the CPU and the
resident memory of everything they run (wrappers, JVMs, Python drivers) over
BENCH_WRAPPERS_SECONDS. Alone, on the running stack: `.venv/bin/python -m bench.wrappers`.
"""

from __future__ import annotations

import json
import sys
import tempfile
import time
from contextlib import ExitStack

from bench.pipeline import Usage
from bench.settings import ROOT, BenchSettings
from bench.spark_run import SparkRun
from bench.topics import Topics
from stedi.config import Settings
from stedi.stack.process import descendants

WRAPPERS = ("submit-redis.sh", "submit-event.sh", "submit-join.sh")


def run_wrappers(topics: Topics, bench: BenchSettings) -> dict:
    print(f">> wrappers: {', '.join(WRAPPERS)} side by side, idle", file=sys.stderr, flush=True)
    env = {
        "STEDI_REDIS_TOPIC": topics.create("idle-customers"),
        "STEDI_EVENTS_TOPIC": topics.create("idle-events"),
        "KAFKA_RISK_TOPIC": topics.create("idle-out"),
        "STEDI_DEAD_LETTER_TOPIC": topics.create("idle-dead"),
        "STEDI_SUBMIT": "local",
    }
    with (
        tempfile.TemporaryDirectory(prefix="bench-checkpoints-") as checkpoints,
        ExitStack() as runs,
    ):
        env["STEDI_CHECKPOINT_DIR"] = checkpoints
        started = [
            runs.enter_context(
                SparkRun(name, [str(ROOT / name)], env, bench.log_dir / f"idle-{name}.log")
            )
            for name in WRAPPERS
        ]

        def pids() -> set[int]:
            return {p for run in started for p in (run.proc.pid, *descendants(run.proc.pid))}

        time.sleep(bench.wrappers_settle_seconds)
        usage = Usage(pids)
        while time.monotonic() - usage.began < bench.wrappers_seconds:
            usage.sample()
            if ended := [run.label for run in started if not run.running]:
                raise RuntimeError(f"{', '.join(ended)} ended while idle; logs in {bench.log_dir}")
            time.sleep(1)
        usage.sample()
        return {**usage.result(), "processes": len(pids()), "wrappers": list(WRAPPERS)}


def main() -> None:
    """`.venv/bin/python -m bench.wrappers`: the figure alone, on the running stack."""
    bench, topics = BenchSettings(), Topics(Settings())
    bench.log_dir.mkdir(parents=True, exist_ok=True)
    try:
        print(json.dumps(run_wrappers(topics, bench), indent=2))
    finally:
        topics.delete_all()


if __name__ == "__main__":
    main()
