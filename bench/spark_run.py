"""One spark-submit run through a wrapper: its output, progress lines and driver memory.

The run gets its own process group, so stopping it stops the wrapper, the
spark-submit JVM and the Python driver it starts, and nothing else.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

from bench.progress import Batch, parse_line
from bench.settings import ROOT
from stedi.stack.process import descendants

SPARK_SUBMIT_CLASS = b"org.apache.spark.deploy.SparkSubmit"


def memory_kb(pid: int) -> dict[str, int]:
    """VmHWM (peak resident set) and VmRSS of a process, in kB."""
    values = {}
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            name, _, rest = line.partition(":")
            if name in ("VmHWM", "VmRSS"):
                values[name] = int(rest.split()[0])
    except OSError:
        pass
    return values


def is_spark_submit(pid: int) -> bool:
    try:
        return SPARK_SUBMIT_CLASS in Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return False


class SparkRun:
    """Starts `argv` (a submit wrapper) at once; `wait` or `stop` it, or use it as a context."""

    def __init__(self, label: str, argv: list[str], env: dict[str, str], log: Path):
        self.label = label
        self.batches: list[Batch] = []
        self.peak_rss_kb = 0
        self.jvm_pid: int | None = None  # the spark-submit JVM's, once the sampler finds it
        log.parent.mkdir(parents=True, exist_ok=True)
        self.log_path = log
        self._log = open(log, "w")
        self.started = time.monotonic()
        self.proc = subprocess.Popen(
            argv,
            cwd=ROOT,
            env={**os.environ, **env},
            stdout=subprocess.PIPE,
            stderr=self._log,
            stdin=subprocess.DEVNULL,
            text=True,
            start_new_session=True,
        )
        self.ended: float | None = None
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._sampler = threading.Thread(target=self._sample, daemon=True)
        self._reader.start()
        self._sampler.start()

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            self._log.write(line)
            batch = parse_line(line)
            if batch is not None:
                self.batches.append(batch)
                print(f"   {self.label}: {line.strip()}", file=sys.stderr, flush=True)

    def _sample(self) -> None:
        """The spark-submit JVM's peak RSS (VmHWM only grows: two samples a second suffice)."""
        jvm = None
        while self.proc.poll() is None:
            if jvm is None or not is_spark_submit(jvm):
                jvm = next((p for p in descendants(self.proc.pid) if is_spark_submit(p)), None)
            self.jvm_pid = jvm
            if jvm is not None:
                self.peak_rss_kb = max(self.peak_rss_kb, *memory_kb(jvm).values(), 0)
            time.sleep(0.5)

    @property
    def running(self) -> bool:
        return self.proc.poll() is None

    @property
    def elapsed(self) -> float:
        return (self.ended or time.monotonic()) - self.started

    @property
    def peak_rss_mb(self) -> float:
        return round(self.peak_rss_kb / 1024, 1)

    def wait(self, timeout: float) -> int:
        """Wait for the run to exit by itself; a run still going after `timeout` is stopped."""
        try:
            code = self.proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.stop()
            raise RuntimeError(
                f"{self.label} did not finish in {timeout:.0f} s; log {self.log_path}"
            ) from None
        self._finish()
        return code

    def stop(self, grace: float = 30) -> None:
        """SIGTERM to the run's process group, SIGKILL after `grace` seconds."""
        if self.proc.poll() is None:
            self._signal_group(signal.SIGTERM)
            try:
                self.proc.wait(timeout=grace)
            except subprocess.TimeoutExpired:
                self._signal_group(signal.SIGKILL)
                self.proc.wait()
        self._finish()

    def _signal_group(self, sig: int) -> None:
        try:
            os.killpg(self.proc.pid, sig)
        except ProcessLookupError:
            pass

    def _finish(self) -> None:
        if self.ended is None:
            self.ended = time.monotonic()
        self._reader.join(timeout=10)
        self._sampler.join(timeout=5)
        self._log.flush()

    def log_tail(self, lines: int = 40) -> str:
        self._log.flush()
        return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])

    def __enter__(self) -> SparkRun:
        return self

    def __exit__(self, *exc) -> None:
        self.stop()
        self._log.close()
