"""`make unit` in a bare checkout on a PATH without the test tools, as a new user's
machine without Go, Chromium or the Maven jars has it (tests/integration/test_unit_tier.py).

It runs in the background, from the integration tier's first test on, beside the
tier's waits on services: the test that checks it only waits for its end.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import time
from pathlib import Path

from tests.shell_support import path_without

ROOT = Path(__file__).resolve().parents[1]
# Not copied: what the installs and the runs make (the checkout of a new user has none).
LEFT_OUT = {".venv", "build", "node_modules", ".git"}
# The shared Python environment, which `make unit` installs on a new machine: pip's part
# is left out (-o), since reinstalling would point the environment at the copy.
VENV_STAMPS = (".venv/.stamp-run", ".venv/.stamp-test")
# Maven stays on PATH: `bin/system-deps run` wants it, and would install it as root.
MISSING = ("go", "chromium", "hadolint")


def bare_checkout(folder: Path) -> None:
    """The working tree's files (tracked and new, not ignored) in `folder`, and a link to
    the Python environment."""
    listed = subprocess.run(
        ["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"],
        cwd=ROOT, capture_output=True, text=True, check=True,
    ).stdout.split("\0")  # fmt: skip
    for name in filter(None, listed):
        source = ROOT / name
        if name.split("/")[0] in LEFT_OUT or not source.is_file():
            continue
        (folder / name).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(source, folder / name)  # mtimes kept: make sees nothing new
    (folder / ".venv").symlink_to(ROOT / ".venv")


class BareUnitRun:
    def __init__(self, folder: Path):
        self.checkout = folder / "checkout"
        self.checkout.mkdir()
        bare_checkout(self.checkout)
        self.path = path_without(folder / "bin", *MISSING)
        self.log = folder / "make-unit.log"
        env = {
            **{k: v for k, v in os.environ.items() if not k.startswith("PYSPARK")},
            "PATH": self.path,
            "PYTHONPATH": str(self.checkout),
            # Nothing listens there: a unit test that reached for a service would fail.
            "KAFKA_BOOTSTRAP_SERVERS": "127.0.0.1:1",
            "REDIS_PORT": "1",
            "STEDI_STACK_DIR": str(folder / "no-stack"),
            "PYTEST_ADDOPTS": "-q -p no:cacheprovider",
        }
        argv = ["make", "--no-print-directory", *(f"-o{s}" for s in VENV_STAMPS), "unit"]
        with open(self.log, "wb") as out:
            self.proc = subprocess.Popen(
                argv, cwd=self.checkout, env=env, stdout=out, stderr=subprocess.STDOUT,
                start_new_session=True,
            )  # fmt: skip

    def wait(self, timeout: float) -> tuple[int, str]:
        """Its exit status and output, once it has ended."""
        deadline = time.monotonic() + timeout
        while self.proc.poll() is None and time.monotonic() < deadline:
            time.sleep(1)
        if self.proc.poll() is None:
            self.stop()
            raise AssertionError(f"make unit still ran after {timeout:.0f} s")
        return self.proc.returncode, self.log.read_text(errors="replace")

    def stop(self) -> None:
        if self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait(30)
