"""Runs the STEDI app (python -m stedi.app) as a real server process for tests."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parents[1]
ADMIN_EMAIL, ADMIN_PASSWORD = "caregiver@test.com", "correct horse battery"


def free_port() -> int:
    """A port nothing listens on now (the OS picks it), for one test's server."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class AppServer:
    def __init__(self, env: dict, log_path: Path, ready_status: int = 200):
        """Starts the app on a free port; ready when /health answers `ready_status`
        (503: Redis away). A variable given as None in `env` is unset."""
        port = free_port()
        self.url = f"http://127.0.0.1:{port}"
        self.log_path = log_path
        full_env = {
            **os.environ,
            "STEDI_APP_PORT": str(port),
            "STEDI_ADMIN_USER": ADMIN_EMAIL,
            "STEDI_ADMIN_PASSWORD": ADMIN_PASSWORD,
            **env,
        }
        full_env = {k: v for k, v in full_env.items() if v is not None}  # None: unset it
        with open(log_path, "wb") as log:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "stedi.app"],
                cwd=ROOT,
                env=full_env,
                stdout=log,
                stderr=subprocess.STDOUT,
            )
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"the app exited:\n{log_path.read_text()}")
            try:
                if httpx.get(f"{self.url}/health", timeout=3).status_code == ready_status:
                    return
            except httpx.HTTPError:
                pass
            time.sleep(0.3)
        self.stop()
        raise RuntimeError(f"the app did not answer /health:\n{log_path.read_text()}")

    def stop(self) -> None:
        self.proc.terminate()
        try:
            self.proc.wait(15)
        except subprocess.TimeoutExpired:
            self.proc.kill()
