"""`make run`'s Spark engine: the four entry scripts' queries in one driver.

Run by spark-submit (`bin/submit stedi/stack/engine.py`), it replaces four
driver JVMs, each polling Kafka on its own, with one JVM on the same cores.
Each job keeps what its script gives it when submitted alone:
- its own session (`newSession()`: the settings its script's `start_query` sets, the
  shared SparkContext), since a query keeps the settings of the session that starts it;
- its script's own query, started by the script's `start_query`, in a thread of its own
  that restarts it after a failure (`supervise`);
- its own log, build/stack/logs/<job>.log: the job's Python output and the
  console sink's rows, which the JVM prints on the query's own thread.

Every query's progress lines come from the driver's listener (bin/driver-jar), on the
engine's own output; its Spark settings from conf/spark-defaults.conf (bin/submit).

With --available-now, each job processes what its topics hold, then the engine
exits (non-zero if a job failed): the four jobs checked in one JVM start
(tests/integration/test_image_spark.py runs them so on the Docker image's Spark).

With --start-when FILE, the JVM starts at once and the queries start once FILE
exists: `make run` warms the engine up while the local stack starts, and
creates FILE once the topics exist. (spark-submit gives the Python driver no
stdin of the terminal's: a file is the signal that reaches it.)

With --stop-requests DIR, a file DIR/<job> (`python -m stedi.stack stop-job <job>`)
hands that job over: the engine stops its query, which frees its checkpoint for the
job's wrapper, deletes the file once the query has stopped, and runs on with the
others. Any other end of a job (a failure) still ends the engine.
"""

from __future__ import annotations

import argparse
import importlib.util
import io
import os
import signal
import sys
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # pyspark is imported by the engine process only, not by make run
    from pyspark.sql import SparkSession


ROOT = Path(__file__).resolve().parents[2]
APP_NAME = "stedi-pipeline"


@dataclass(frozen=True)
class Job:
    name: str  # its log's name and make run's prefix
    script: str
    wrapper: str  # what runs the script alone
    query: str  # the script's QUERY_NAME, which names its progress lines and gauges


# Each script's default trigger fits a trickle: the join's bounds a point's delay on the
# graph; the others batch several seconds at once (docs/performance.md).
JOBS = (
    Job(
        "customers",
        "sparkpyrediskafkastreamtoconsole.py",
        "submit-redis.sh",
        "redis-customers-console",
    ),
    Job("risk", "sparkpyeventskafkastreamtoconsole.py", "submit-event.sh", "risk-events-console"),
    Job("join", "sparkpykafkajoin.py", "submit-join.sh", "customer-risk-join"),
    Job("score", "sparkpyriskscore.py", "submit-score.sh", "risk-score"),
)
# A failed query restarts after 1 s, doubling up to 15 s while it fails before its first
# batch; bin/submit restarts a failed driver run alone the same way.
RESTART_DELAYS_S = (1.0, 15.0)
# The engine's scheduler pools, one per job; the join's goes first.
FAIR_SCHEDULER = Path(__file__).with_name("fairscheduler.xml")
# Spark's PrometheusServlet, which conf/spark-defaults.conf turns on for every driver,
# answers here on the UI's port (with the slash; it redirects there otherwise).
PROMETHEUS_PATH = "/metrics/prometheus/"


def load_script(file_name: str) -> ModuleType:
    """Imports ROOT/<file_name> under its own name, as spark-submit would run it."""
    name = file_name.removesuffix(".py")
    if name not in sys.modules:
        spec = importlib.util.spec_from_file_location(name, ROOT / file_name)
        module = importlib.util.module_from_spec(spec)
        sys.modules[name] = module  # dataclasses look their module up here
        spec.loader.exec_module(module)
    return sys.modules[name]


class ThreadRoutedStream(io.TextIOBase):
    """sys.stdout or sys.stderr sent to a file per thread; other threads to `default`."""

    def __init__(self, default):
        self.default = default
        self.local = threading.local()

    def route(self, stream) -> None:
        self.local.stream = stream

    def _target(self):
        return getattr(self.local, "stream", None) or self.default

    def write(self, text: str) -> int:
        return self._target().write(text)

    def flush(self) -> None:
        self._target().flush()


def route_jvm_console(spark: SparkSession, log_path: Path) -> bool:
    """Sends what the JVM prints with Scala's `println` on this thread, and on the
    threads it starts from now on (a query's own thread), to `log_path`.

    Scala's Console.out is an inheritable thread-local, set here by reflection;
    False (the rows then go to the engine's log) if this Scala hides it.
    """
    jvm = spark._jvm
    try:
        field = jvm.java.lang.Class.forName("scala.Console$").getDeclaredField("outVar")
        field.setAccessible(True)
        stream = jvm.java.io.PrintStream(
            jvm.java.io.FileOutputStream(str(log_path), True), True, "UTF-8"
        )
        getattr(field.get(None), "value_$eq")(stream)
    except Exception as error:  # a Py4J error of any kind: keep the rows, unrouted
        print(f"console rows go to the engine's log: {error}", file=sys.__stderr__)
        return False
    return True


def ship_scripts(spark: SparkSession) -> None:
    """On a cluster, sends the scripts to the executors: a function of a module the engine
    imported (the score job's state function) reaches them by module name, and their
    Python workers must find that module. Local executors share the driver's folder."""
    if not spark.sparkContext.master.startswith("local"):
        for job in JOBS:
            spark.sparkContext.addPyFile(str(ROOT / job.script))


def supervise(start, stopped: threading.Event, available_now: bool) -> None:
    """Runs the query `start()` returns until it ends; restarts it from its checkpoint
    after a failure, unless it was --available-now or the job is being stopped."""
    from pyspark.errors import StreamingQueryException

    delay, longest = RESTART_DELAYS_S
    while not stopped.is_set():
        query = start()
        try:
            query.awaitTermination()
            return
        except StreamingQueryException as error:
            if available_now or stopped.is_set():
                raise
            if query.lastProgress is not None:  # it ran: a new failure, not the last one's
                delay = RESTART_DELAYS_S[0]
            print(f"[{query.name}] failed, restarting in {delay:.0f} s: {error}", flush=True)
            stopped.wait(delay)
            delay = min(delay * 2, longest)


class Engine:
    def __init__(self, spark: SparkSession, log_dir: Path, available_now: bool = False):
        self.spark = spark
        self.log_dir = log_dir
        self.available_now = available_now
        self.sessions: list[SparkSession] = []
        self.job_sessions: dict[str, SparkSession] = {}  # for the jobs' metrics
        self.failed: list[str] = []
        self.handed_over: set[str] = set()  # jobs stopped at the user's request
        self.stopped = {job.name: threading.Event() for job in JOBS}
        self.threads: dict[str, threading.Thread] = {}
        self.done = threading.Event()  # a job ended by itself: the engine ends
        self.stdout = ThreadRoutedStream(sys.stdout)
        self.stderr = ThreadRoutedStream(sys.stderr)
        sys.stdout, sys.stderr = self.stdout, self.stderr

    def _run_job(self, job: Job, module: ModuleType) -> None:
        log_path = self.log_dir / f"{job.name}.log"
        with open(log_path, "a", buffering=1, encoding="utf-8") as log:
            self.stdout.route(log)
            self.stderr.route(log)
            try:
                route_jvm_console(self.spark, log_path)
                # Inherited by the query's thread, which submits the job's tasks.
                self.spark.sparkContext.setLocalProperty("spark.scheduler.pool", job.name)
                session = self.spark.newSession()
                self.sessions.append(session)
                self.job_sessions[job.name] = session
                supervise(
                    lambda: module.start_query(session, self.available_now),
                    self.stopped[job.name],
                    self.available_now,
                )
            except BaseException as error:  # SystemExit of a bad setting too
                print(f"[{job.name}] stopped by an error: {error!r}", flush=True)
                self.failed.append(job.name)
            finally:
                if job.name not in self.handed_over:
                    self.done.set()

    def start(self) -> list[threading.Thread]:
        threads = []
        for job in JOBS:
            module = load_script(job.script)
            thread = threading.Thread(
                target=self._run_job, args=(job, module), name=job.name, daemon=True
            )
            thread.start()
            threads.append(thread)
            self.threads[job.name] = thread
            print(f"[engine] {job.name}: {job.script}", flush=True)
        return threads

    def job_queries(self) -> dict:
        """Each job's running query, or None (not started yet, stopped, failed)."""
        queries = {}
        for job in JOBS:
            session = self.job_sessions.get(job.name)
            active = session.streams.active if session is not None else []
            queries[job.name] = active[0] if active else None
        return queries

    def take_stop_requests(self, requests: Path) -> None:
        """Hands over each job named by a file in `requests`: stops its query (and keeps
        `supervise` from restarting it), then, once its thread has ended, deletes the
        request, which tells `stop-job` that the checkpoint is free."""
        for job in JOBS:
            request = requests / job.name
            if request.exists():
                self.handed_over.add(job.name)
                self.stopped[job.name].set()
            if job.name not in self.handed_over:
                continue
            thread = self.threads.get(job.name)
            if thread is not None and thread.is_alive():
                session = self.job_sessions.get(job.name)
                for query in session.streams.active if session is not None else []:
                    query.stop()
            elif request.exists():
                request.unlink(missing_ok=True)
                print(
                    f"[engine] {job.name}: stopped on request; "
                    f"run ./{job.wrapper} to run it yourself",
                    flush=True,
                )

    def stop(self, threads: list[threading.Thread]) -> None:
        for stopped in self.stopped.values():
            stopped.set()
        for session in self.sessions:
            for query in session.streams.active:
                query.stop()
        for thread in threads:
            thread.join(timeout=30)


def build_base_session() -> SparkSession:
    from pyspark.sql import SparkSession

    # A pool per job, the join's first (fairscheduler.xml): the four queries share the cores.
    return (
        SparkSession.builder.appName(APP_NAME)
        .config("spark.scheduler.mode", "FAIR")
        .config("spark.scheduler.allocation.file", str(FAIR_SCHEDULER))
        .getOrCreate()
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--start-when", type=Path, help="start the queries once this file exists")
    parser.add_argument(
        "--stop-requests", type=Path, help="stop a job's query when DIR/<job> appears"
    )
    parser.add_argument(
        "--available-now", action="store_true", help="each job processes what is there, then exit"
    )
    args = parser.parse_args(argv)
    log_dir = Path(os.environ.get("STEDI_LOG_DIR", ROOT / "build" / "stack" / "logs"))
    log_dir.mkdir(parents=True, exist_ok=True)
    spark = build_base_session()
    ship_scripts(spark)
    ui = spark.sparkContext.uiWebUrl
    print(f"[engine] Spark {spark.version} up, UI {ui}", flush=True)
    while args.start_when and not args.start_when.exists():
        time.sleep(0.2)
    engine = Engine(spark, log_dir, args.available_now)
    # make run gives the port; a run without it (the Docker image's Spark) serves none.
    metrics_port = int(os.environ.get("STEDI_SPARK_METRICS_PORT", "0") or 0)
    if metrics_port and not args.available_now:
        from stedi.stack import engine_metrics

        try:
            jobs_url = engine_metrics.serve(metrics_port, engine.job_queries)
        except OSError as error:  # a port in use: the jobs run on, without this endpoint
            jobs_url = f"none ({error})"
        print(f"[engine] metrics: {ui}{PROMETHEUS_PATH} (Spark), {jobs_url} (jobs)", flush=True)
    stop = threading.Event()
    for signum in (signal.SIGINT, signal.SIGTERM):
        signal.signal(signum, lambda *_: stop.set())
    threads = engine.start()
    try:
        if args.available_now:  # every job ends by itself
            while not stop.is_set() and any(thread.is_alive() for thread in threads):
                stop.wait(0.5)
            print(f"[engine] jobs done, failed: {', '.join(engine.failed) or 'none'}", flush=True)
            return 1 if engine.failed or stop.is_set() else 0
        while not stop.is_set() and not engine.done.is_set():
            if args.stop_requests is not None:
                engine.take_stop_requests(args.stop_requests)
            stop.wait(1.0)
        if engine.done.is_set() and not stop.is_set():
            print(f"[engine] a job ended: {', '.join(engine.failed) or 'none'}", flush=True)
    finally:
        print("[engine] stopping the queries", flush=True)
        engine.stop(threads)
        spark.stop()
    return 1 if engine.failed or not stop.is_set() else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
