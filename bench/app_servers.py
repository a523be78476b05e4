"""The app section's processes: a redis-server of its own and app processes on it, each on a
free loopback port, with their output in the bench's log folder."""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx
import redis

from bench.settings import ROOT
from stedi.stack.drivers import free_port

STOP_SECONDS = 15


def _stop(process: subprocess.Popen) -> None:
    if process.poll() is None:
        process.terminate()
        try:
            process.wait(STOP_SECONDS)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


class PrivateRedis:
    """redis-server on a free port, in memory only (no RDB, no AOF), stopped on exit."""

    def __init__(self, log_dir: Path):
        self.port = free_port()
        self.folder = tempfile.TemporaryDirectory(prefix="bench-app-redis-")
        argv = ["redis-server", "--port", str(self.port), "--bind", "127.0.0.1", "--save", ""]
        argv += ["--appendonly", "no", "--dir", self.folder.name]
        self.log = open(log_dir / "app-redis.log", "wb")
        self.process = subprocess.Popen(argv, stdout=self.log, stderr=subprocess.STDOUT)
        self.client = redis.Redis(host="127.0.0.1", port=self.port, socket_timeout=600)
        deadline = time.monotonic() + 30
        while True:
            try:
                self.client.ping()
                return
            except redis.ConnectionError:
                if self.process.poll() is not None or time.monotonic() > deadline:
                    self.stop()
                    raise RuntimeError(f"redis-server did not start; log {self.log.name}") from None
                time.sleep(0.05)

    def stop(self) -> None:
        self.client.close()
        _stop(self.process)
        self.log.close()
        self.folder.cleanup()

    def __enter__(self) -> PrivateRedis:
        return self

    def __exit__(self, *exc) -> None:
        self.stop()


class AppProcess:
    """`python -m stedi.app` with `env` on a free port; `started_s` is its launch to its
    first /health 200."""

    def __init__(self, name: str, env: dict[str, str], log_dir: Path, timeout: float):
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log = open(log_dir / f"{name}.log", "wb")
        full_env = {**os.environ, **env, "STEDI_APP_PORT": str(self.port)}
        began = time.monotonic()
        self.process = subprocess.Popen(
            [sys.executable, "-m", "stedi.app"],
            env=full_env,
            cwd=ROOT,
            stdout=self.log,
            stderr=subprocess.STDOUT,
        )
        while self.health() != 200:
            if self.process.poll() is not None or time.monotonic() - began > timeout:
                self.stop()
                raise RuntimeError(f"app {name} did not start; log {self.log.name}")
            time.sleep(0.02)
        self.started_s = time.monotonic() - began

    def health(self, timeout: float = 2.0) -> int | None:
        try:
            return httpx.get(f"{self.url}/health", timeout=timeout).status_code
        except httpx.HTTPError:
            return None

    def memory_mb(self, field: str = "VmRSS") -> float:
        """VmRSS (now) or VmHWM (the peak so far) of the process, in MiB."""
        with open(f"/proc/{self.process.pid}/status") as status:
            for line in status:
                if line.startswith(field + ":"):
                    return int(line.split()[1]) / 1024
        raise RuntimeError(f"no {field} for pid {self.process.pid}")

    def stop(self) -> None:
        _stop(self.process)
        self.log.close()
