"""Spark drivers run alone (a wrapper, `bin/submit` in local mode) announce themselves, so
that the app's status panel finds their metrics: <stack dir>/drivers/<script stem>.json
holds {"script", "ui", "pid"}, the driver's Spark UI (whose /metrics/prometheus/ has its
queries' gauges) and the pid of `bin/submit`, which lives as long as its driver.

`bin/submit` runs this file as a script, before spark-submit, with the Python it gives
Spark: `drivers.py announce STACK_DIR SCRIPT PID` picks a free UI port, writes the
announcement and prints the port. So it imports nothing of this project (a wrapper may
run under a Python without it installed); the app imports `announced`.
"""

from __future__ import annotations

import json
import os
import socket
import sys
from pathlib import Path


def announcement(stack_dir: str | os.PathLike, script: str) -> Path:
    return Path(stack_dir) / "drivers" / f"{Path(script).stem}.json"


def free_port() -> int:
    """A loopback port nothing listens on now, which the system picks: not Spark's own
    choice (4040, then the next free one), which drivers starting together race for, so
    that a driver's announced port is its own."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def announce(stack_dir: str | os.PathLike, script: str, pid: int, port: int) -> Path:
    """Writes the driver's announcement (whole or not at all: a reader never sees half)."""
    path = announcement(stack_dir, script)
    path.parent.mkdir(parents=True, exist_ok=True)
    record = {"script": Path(script).name, "ui": f"http://127.0.0.1:{port}", "pid": pid}
    partial = path.with_suffix(f".{pid}.tmp")
    partial.write_text(json.dumps(record) + "\n")
    partial.replace(path)
    return path


def announced(stack_dir: str | os.PathLike, script: str) -> dict | None:
    """The last driver of `script` that announced itself (it may have ended since), or None."""
    try:
        record = json.loads(announcement(stack_dir, script).read_text())
    except (OSError, ValueError):
        return None
    if not isinstance(record, dict) or not isinstance(record.get("ui"), str):
        return None
    return record


def main(argv: list[str]) -> int:
    if len(argv) != 4 or argv[0] != "announce" or not argv[3].isdigit():
        print("usage: drivers.py announce STACK_DIR SCRIPT PID", file=sys.stderr)
        return 2
    _, stack_dir, script, pid = argv
    port = free_port()
    try:
        path = announce(stack_dir, script, int(pid), port)
        print(f"Spark UI http://127.0.0.1:{port} (announced in {path})", file=sys.stderr)
    except OSError as error:  # the driver runs all the same; the panel does not see it
        print(f"the driver is not announced: {error}", file=sys.stderr)
    print(port)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
