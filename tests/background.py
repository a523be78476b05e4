"""One way for tests to run a process in the background: its output to a log file, in a
process group of its own (so a wrapper's driver ends with it), stopped after the test."""

from __future__ import annotations

import os
import signal
import subprocess
import time
from collections.abc import Callable
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


class Background:
    def __init__(self, argv: list[str], env: dict[str, str], log: Path, cwd: Path = ROOT):
        """Starts `argv` with exactly `env`, appending its stdout and stderr to `log`."""
        self.log = log
        with open(log, "ab") as out:
            self.proc = subprocess.Popen(
                argv, env=env, cwd=cwd, stdout=out, stderr=subprocess.STDOUT, start_new_session=True
            )

    @property
    def pid(self) -> int:
        return self.proc.pid

    def running(self) -> bool:
        return self.proc.poll() is None

    def wait_until(self, ready: Callable[[], bool], timeout: float, what: str) -> None:
        """Polls `ready` until it holds; fails with the log's tail when the process exits
        or `timeout` passes first (and then stops it)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if not self.running():
                raise RuntimeError(f"exited before {what}:\n{self.tail()}")
            if ready():
                return
            time.sleep(0.3)
        self.stop()
        raise RuntimeError(f"no {what} within {timeout:.0f} s:\n{self.tail()}")

    def kill(self) -> None:
        """SIGKILL, no cleanup of any kind: what a crash leaves behind."""
        self._signal(signal.SIGKILL)
        self.proc.wait(10)

    def stop(self, grace: float = 15) -> None:
        """SIGTERM to the group; SIGKILL after `grace` seconds."""
        if not self.running():
            return
        self._signal(signal.SIGTERM)
        try:
            self.proc.wait(grace)
        except subprocess.TimeoutExpired:
            self.kill()

    def _signal(self, sig: int) -> None:
        try:
            os.killpg(self.proc.pid, sig)
        except ProcessLookupError:
            pass  # already gone

    def tail(self, lines: int = 30) -> str:
        return "\n".join(self.log.read_text(errors="replace").splitlines()[-lines:])

    def __enter__(self) -> Background:
        return self

    def __exit__(self, *exc) -> None:
        self.stop()
