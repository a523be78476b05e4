"""`make run`: the whole pipeline in the foreground; Ctrl-C stops all it started.

Starts the STEDI app and one Spark engine (stedi/stack/engine.py: the four
Spark jobs' queries in one driver JVM), and the local stack when it is not up.
The engine's JVM warms up while the stack starts; its queries start once the
topics exist. Each job logs to build/stack/logs/<name>.log, and this command
follows those logs in the terminal with a prefix per job.
"""

from __future__ import annotations

import contextlib
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

from stedi.config import Settings
from stedi.stack import engine, kafka_server, services, spark_cluster
from stedi.stack.process import TAG, children, tagged_processes

# The engine starts its queries once this file exists: after the stack is up.
STACK_READY = services.STACK_DIR / "run" / "stack-ready"
# `stop-job <job>` creates <job> here; the engine stops that query and deletes the file.
STOP_REQUESTS = services.STACK_DIR / "run" / "stop-job"
# Stopping a query waits for its running batch (a slow one on a busy machine).
STOP_JOB_TIMEOUT_S = 120
PROCESSES = {
    "spark": [
        str(services.ROOT / "bin" / "submit"),
        "stedi/stack/engine.py",
        f"--start-when={STACK_READY}",
        f"--stop-requests={STOP_REQUESTS}",
    ],
    "app": [sys.executable, "-m", "stedi.app"],
}
# The engine's jobs, each with a log of its own.
JOB_LOGS = tuple(job.name for job in engine.JOBS)
NOISE = (" WARN ", "WARNING: Using incubator modules")
# Stopping a query cancels the batch it is running, and Spark logs each cancelled task
# and write as an ERROR with its stack trace: at Ctrl-C only, the terminal skips them
# (the log keeps them).
STOP_NOISE = re.compile(r" ERROR |Exception|^\s+at |^\s*\.\.\. \d+ more|^Caused by")


# The engine's log holds every query's progress lines (the drivers' listener): the
# terminal shows each under its job's prefix.
QUERY_PREFIXES = {f"[{job.query}] ": job.name for job in engine.JOBS}


class Follower:
    """Prints the new lines of a log file with a prefix (a small `tail -f`); a line of one
    of `by_start`'s beginnings gets that one's prefix instead."""

    def __init__(self, prefix: str, path: Path, by_start: dict[str, str] | None = None):
        """Follows from the log's current end: earlier runs' lines are not repeated."""
        self.prefix, self.path, self.by_start = prefix, path, by_start or {}
        self.position = path.stat().st_size if path.exists() else 0

    def prefix_of(self, line: str) -> str:
        return next(
            (p for start, p in self.by_start.items() if line.startswith(start)), self.prefix
        )

    def poll(self, stopping: bool = False) -> None:
        try:
            with open(self.path, "rb") as f:
                f.seek(self.position)
                data = f.read()
        except FileNotFoundError:
            return
        complete = data.rfind(b"\n") + 1
        self.position += complete
        for line in data[:complete].decode(errors="replace").splitlines():
            if not line.strip() or any(n in line for n in NOISE):
                continue
            if not (stopping and STOP_NOISE.search(line)):
                print(f"{self.prefix_of(line):>10} | {line}", flush=True)


def start_job(name: str, argv: list[str], extra_env: dict | None = None) -> subprocess.Popen:
    log_path = services.log_path(name)
    log_path.parent.mkdir(parents=True, exist_ok=True)
    with open(log_path, "ab") as log:
        return subprocess.Popen(
            argv,
            # make run is the local, Docker-free path even when a compose stack runs.
            # The tag lets `make down` find the job if this command dies without stopping it.
            env={
                **os.environ,
                # The engine's jobs' logs, where the followers read them.
                "STEDI_LOG_DIR": str(services.log_path(name).parent),
                "STEDI_SUBMIT": "local",
                TAG: f"{services.STACK_DIR}:{name}",
                **(extra_env or {}),
            },
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


def stop_job(proc: subprocess.Popen, timeout: float = 30, driver_first: bool = False) -> None:
    """SIGTERM the job's whole process group (the JVM and its Python driver), wait until
    every process of it is gone, SIGKILL what is left after `timeout`.

    driver_first: SIGTERM only the Python driver (spark-submit's child) first, so it
    stops its queries and its SparkContext itself before the JVM is told to exit.
    """
    deadline = time.monotonic() + timeout
    if driver_first:
        for pid in children(proc.pid):
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGTERM)
        while time.monotonic() < deadline - timeout / 2 and group_alive(proc.pid):
            proc.poll()
            time.sleep(0.2)
    if group_alive(proc.pid):
        os.killpg(proc.pid, signal.SIGTERM)
    while time.monotonic() < deadline:
        proc.poll()  # reap the leader so it does not linger as a zombie
        if not group_alive(proc.pid):
            return
        time.sleep(0.2)
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()


def run(settings: Settings) -> int:
    jobs: dict[str, subprocess.Popen] = {}
    started: list[services.Service] = []
    interrupted = False

    def on_signal(*_):
        nonlocal interrupted
        interrupted = True

    signal.signal(signal.SIGINT, on_signal)
    signal.signal(signal.SIGTERM, on_signal)
    names = ("spark", *JOB_LOGS, "app")
    followers = [
        Follower(name, services.log_path(name), QUERY_PREFIXES if name == "spark" else None)
        for name in names
    ]
    try:
        # The engine's JVM starts first: it warms up while the stack starts.
        STACK_READY.unlink(missing_ok=True)
        for request in STOP_REQUESTS.glob("*"):  # an earlier run's: this run has all four
            request.unlink()
        # Every broker, so that a process started while one is down finds the others.
        kafka_env = {"KAFKA_BOOTSTRAP_SERVERS": services.bootstrap_servers(settings)}
        # A Spark cluster's master must answer before the engine's SparkContext registers.
        started = services.start_spark_cluster(settings)
        spark_env = {
            "STEDI_SPARK_METRICS_PORT": str(settings.spark_metrics_port),
            **kafka_server.job_env(settings, os.environ),
            **spark_cluster.stack_env(settings),
        }
        jobs["spark"] = start_job("spark", PROCESSES["spark"], spark_env)
        announce("spark", jobs["spark"], PROCESSES["spark"])
        started += services.up(settings)  # only what is not running yet
        STACK_READY.parent.mkdir(parents=True, exist_ok=True)
        STACK_READY.touch()  # the topics exist: the engine starts its queries
        jobs["app"] = start_job("app", PROCESSES["app"], kafka_env)
        announce("app", jobs["app"], PROCESSES["app"])
        print(
            f">> running: STEDI app on http://localhost:{settings.app_port}, Spark UI on "
            "http://localhost:4040/StreamingQuery/ (all four queries; the engine's first line "
            "names the next free port if 4040 is taken); "
            "Ctrl-C stops everything this command started",
            flush=True,
        )
        print(metrics_line(settings), flush=True)
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
        for name, proc in reversed(jobs.items()):
            stop_job(proc, driver_first=name == "spark")
            print(f"   stopped {name}", flush=True)
        for follower in followers:
            follower.poll(stopping=True)  # the jobs' last lines
        if started:
            services.down(only=started)


def metrics_line(settings: Settings) -> str:
    """Where Prometheus (docs/operations.md) finds each part's metrics."""
    ports = (settings.spark_metrics_port, settings.redis_source_metrics_port)
    jobs, source = (f"http://127.0.0.1:{port}/metrics" if port else "off" for port in ports)
    return (
        f">> metrics: app http://localhost:{settings.app_port}/metrics, "
        f"Redis source {source}, Spark jobs {jobs}, "
        "Spark <its UI>/metrics/prometheus/ (the engine's `metrics:` line names the port)"
    )


def announce(name: str, proc: subprocess.Popen, argv: list[str]) -> None:
    command = " ".join(Path(a).name for a in argv)
    log = services.log_path(name)
    print(f">> {name}: {command} (pid {proc.pid}), log {log}", flush=True)


def engine_running() -> bool:
    """Whether a `make run` of this checkout's stack dir has its Spark engine up."""
    tag = f"{services.STACK_DIR}:spark"
    return any(found == tag for _, found in tagged_processes(tag))


def stop_engine_job(name: str, timeout: float = STOP_JOB_TIMEOUT_S) -> None:
    """`python -m stedi.stack stop-job <job>`: asks the running make run's engine to stop
    that job's query, and returns once it has, so that the job's wrapper can run it alone
    from the same checkpoint (the engine runs on with the other jobs)."""
    jobs = {job.name: job for job in engine.JOBS}
    if name not in jobs:
        raise services.StackError(f"no job {name!r}: make run's jobs are {', '.join(jobs)}")
    if not engine_running():
        raise services.StackError(f"make run is not running (stack dir {services.STACK_DIR})")
    request = STOP_REQUESTS / name
    request.parent.mkdir(parents=True, exist_ok=True)
    request.touch()
    deadline = time.monotonic() + timeout
    while request.exists():  # the engine deletes it once the query has stopped
        ended = not engine_running()
        if ended or time.monotonic() > deadline:
            request.unlink(missing_ok=True)
            why = "ended first" if ended else f"did not stop {name} within {timeout:.0f} s"
            raise services.StackError(f"make run's engine {why}: see {services.log_path('spark')}")
        time.sleep(0.5)
    print(
        f"{name} stopped in make run, which runs on with the other jobs; "
        f"./{jobs[name].wrapper} runs it alone from the same checkpoint "
        f"(make run runs it again at its next start)",
        flush=True,
    )
