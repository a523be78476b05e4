"""`make run`: the whole pipeline in the foreground; Ctrl-C stops all it started.

Starts the local stack when it is not up, then the STEDI app and the three
Spark jobs through their submit wrappers, each logging to
build/stack/logs/<name>.log, and follows those logs in the terminal with a
prefix per process.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from stedi.config import Settings
from stedi.stack import services
from stedi.stack.process import TAG

JOBS = {
    "app": [sys.executable, "-m", "stedi.app"],
    "customers": [str(services.ROOT / "submit-redis.sh")],
    "risk": [str(services.ROOT / "submit-event.sh")],
    "join": [str(services.ROOT / "submit-join.sh")],
    "score": [str(services.ROOT / "submit-score.sh")],
}
NOISE = (" WARN ", "WARNING: Using incubator modules")


class Follower:
    """Prints the new lines of a log file with a prefix (a small `tail -f`)."""

    def __init__(self, prefix: str, path: Path):
        """Follows from the log's current end: earlier runs' lines are not repeated."""
        self.prefix, self.path = prefix, path
        self.position = path.stat().st_size if path.exists() else 0

    def poll(self) -> None:
        try:
            with open(self.path, "rb") as f:
                f.seek(self.position)
                data = f.read()
        except FileNotFoundError:
            return
        complete = data.rfind(b"\n") + 1
        self.position += complete
        for line in data[:complete].decode(errors="replace").splitlines():
            if line.strip() and not any(n in line for n in NOISE):
                print(f"{self.prefix:>10} | {line}", flush=True)


def start_job(name: str, argv: list[str]) -> subprocess.Popen:
    log_path = services.log_path(name)
    log_path.parent.mkdir(parents=True, exist_ok=True)
    with open(log_path, "ab") as log:
        return subprocess.Popen(
            argv,
            # make run is the local, Docker-free path even when a compose stack runs.
            # The tag lets `make down` find the job if this command dies without stopping it.
            env={**os.environ, "STEDI_SUBMIT": "local", TAG: f"{services.STACK_DIR}:{name}"},
            stdout=log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            cwd=services.ROOT,
            start_new_session=True,  # own process group: the JVM and Python workers stop with it
        )


def group_alive(pgid: int) -> bool:
    try:
        os.killpg(pgid, 0)
    except ProcessLookupError:
        return False
    return True


def stop_job(proc: subprocess.Popen, timeout: float = 30) -> None:
    """SIGTERM the job's whole process group (the JVM and its Python driver), wait until
    every process of it is gone, SIGKILL what is left after `timeout`."""
    if group_alive(proc.pid):
        os.killpg(proc.pid, signal.SIGTERM)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        proc.poll()  # reap the leader so it does not linger as a zombie
        if not group_alive(proc.pid):
            return
        time.sleep(0.2)
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()


def run(settings: Settings) -> int:
    started = services.up(settings)  # only what is not running yet
    jobs: dict[str, subprocess.Popen] = {}
    interrupted = False

    def on_signal(*_):
        nonlocal interrupted
        interrupted = True

    signal.signal(signal.SIGINT, on_signal)
    signal.signal(signal.SIGTERM, on_signal)
    try:
        followers = []
        for name, argv in JOBS.items():
            log_path = services.log_path(name)
            followers.append(Follower(name, log_path))
            jobs[name] = start_job(name, argv)
            command = " ".join(Path(a).name for a in argv)
            print(f">> {name}: {command} (pid {jobs[name].pid}), log {log_path}", flush=True)
        print(
            f">> running: STEDI app on http://localhost:{settings.app_port}; "
            "Ctrl-C stops everything this command started",
            flush=True,
        )
        while not interrupted:
            for follower in followers:
                follower.poll()
            for name, proc in jobs.items():
                if proc.poll() is not None:
                    print(f"!! {name} exited with {proc.returncode}: see its log", file=sys.stderr)
                    return 1
            time.sleep(0.5)
        return 0
    finally:
        print(">> stopping", flush=True)
        for name, proc in jobs.items():
            stop_job(proc)
            print(f"   stopped {name}", flush=True)
        if started:
            services.down(only=started)
