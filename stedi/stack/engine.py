"""`make run`'s Spark engine: the four entry scripts' queries in one driver.

Run by spark-submit (`bin/submit stedi/stack/engine.py`), it replaces four
driver JVMs, each polling Kafka on its own, with one JVM on the same cores.
Each job keeps what its script gives it when submitted alone:
- its own session (`newSession()`: the script's SQL settings, the shared
  SparkContext), since a query keeps the settings of the session that starts it;
- its script's own `start` and `run` (progress lines, restart on failure), in a
  thread of its own;
- its own log, build/stack/logs/<job>.log: the job's Python output and the
  console sink's rows, which the JVM prints on the query's own thread.

The triggers fit a trickle (see JOBS); STEDI_TRIGGER_INTERVAL, when set,
applies to every job, as it does to each script.

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
import dataclasses
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
    trigger: str  # the processing-time trigger in this engine


# The join's trigger bounds a point's delay on the graph; the others only feed a
# console or the risk-quality check, so they batch several seconds of a trickle at once
# (each micro-batch costs about the same CPU whether it holds 1 record or 20): 10 s, not
# 5 s, took about 0.05 cores off make run at the simulator's speed. 20 s saved no more
# within the spread of runs, and a job reports progress once per trigger: the status
# panel calls a job late after 15 s without one (tests/unit/test_engine.py).
JOBS = (
    Job("customers", "sparkpyrediskafkastreamtoconsole.py", "submit-redis.sh", "10 seconds"),
    Job("risk", "sparkpyeventskafkastreamtoconsole.py", "submit-event.sh", "10 seconds"),
    Job("join", "sparkpykafkajoin.py", "submit-join.sh", "0.5 seconds"),
    Job("score", "sparkpyriskscore.py", "submit-score.sh", "10 seconds"),
)
# One state store instance per stateful operator, and one Python worker for the risk
# score's state function, instead of two of each: a trickle needs no parallelism.
# (A query restarted from a checkpoint keeps the number it was started with.)
SHUFFLE_PARTITIONS = "1"
# An idle query reports progress at the first trigger at least this long after its last
# report. With Spark's 10 s and a 10 s trigger, a trigger a few ms earlier than the last
# skipped a report, and the status panel saw 20 s without progress (amber).
IDLE_PROGRESS_S = 5
# A trickle's micro-batches hold a few rows: interpreting their expressions costs less
# than compiling code for them. The join's arrival time (the batch's time) is a literal
# that whole-stage code inlines, so its code was new, compiled and JIT-compiled anew in
# every batch (twice the CPU of a batch without it in a measured query). And idle queries
# report every IDLE_PROGRESS_S.
TRICKLE_CONF = {
    "spark.sql.codegen.wholeStage": "false",
    "spark.sql.codegen.factoryMode": "NO_CODEGEN",
    "spark.sql.streaming.noDataProgressEventInterval": f"{IDLE_PROGRESS_S}s",
}
# The engine's JVM, set before spark-submit starts it (`make run` passes these): a heap
# for a trickle that starts small, the serial collector, whose footprint is the
# smallest, and two malloc arenas for the native side (RocksDB), not 8 per core.
# The C1 compiler alone reserves 48 MiB for compiled code, which the four queries' code
# overflows: the JVM then flushed and recompiled code all the time (its sweeper thread
# alone took 0.03 cores at a trickle). 128 MiB holds it.
JVM_ENV = {
    "SPARK_DRIVER_MEMORY": "512m",
    "SPARK_SUBMIT_OPTS": (
        "-Xms64m -XX:+UseSerialGC -XX:TieredStopAtLevel=1 -XX:ReservedCodeCacheSize=128m"
    ),
    "MALLOC_ARENA_MAX": "2",
}
# The UI keeps fewer finished jobs, stages and SQL executions (each micro-batch makes
# some): the heap stays small however long make run runs.
# Each micro-batch also writes its plan's text for the SQL tab: the one-line-per-operator
# form, not the formatted one, which was 5% of a trickle join's driver time in a profile.
UI_CONF = {
    "spark.ui.retainedJobs": "200",
    "spark.ui.retainedStages": "200",
    "spark.sql.ui.retainedExecutions": "100",
    "spark.sql.ui.explainMode": "simple",
}
# Spark's PrometheusServlet, which bin/submit turns on for every job (and this engine),
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


def job_session(base: SparkSession, module: ModuleType, settings) -> SparkSession:
    session = base.newSession()
    for key, value in {**module.session_conf(settings), **TRICKLE_CONF}.items():
        session.conf.set(key, value)
    return session


def job_settings(module: ModuleType, job: Job):
    """The script's settings, with this engine's defaults where the environment sets none."""
    settings = module.Settings()
    defaults = {"trigger_interval": ("STEDI_TRIGGER_INTERVAL", job.trigger)}
    if hasattr(settings, "shuffle_partitions"):
        defaults["shuffle_partitions"] = ("STEDI_SHUFFLE_PARTITIONS", SHUFFLE_PARTITIONS)
    changes = {
        name: value
        for name, (variable, value) in defaults.items()
        if not os.environ.get(variable, "").strip()
    }
    return dataclasses.replace(settings, **changes)


class Engine:
    def __init__(self, spark: SparkSession, log_dir: Path, available_now: bool = False):
        self.spark = spark
        self.log_dir = log_dir
        self.available_now = available_now
        self.sessions: list[SparkSession] = []
        self.job_sessions: dict[str, SparkSession] = {}  # for the jobs' metrics
        self.failed: list[str] = []
        self.handed_over: set[str] = set()  # jobs stopped at the user's request
        self.threads: dict[str, threading.Thread] = {}
        self.done = threading.Event()  # a job ended by itself: the engine ends
        self.stdout = ThreadRoutedStream(sys.stdout)
        self.stderr = ThreadRoutedStream(sys.stderr)
        sys.stdout, sys.stderr = self.stdout, self.stderr

    def _run_job(self, job: Job, module: ModuleType, settings) -> None:
        log_path = self.log_dir / f"{job.name}.log"
        with open(log_path, "a", buffering=1, encoding="utf-8") as log:
            self.stdout.route(log)
            self.stderr.route(log)
            try:
                route_jvm_console(self.spark, log_path)
                session = job_session(self.spark, module, settings)
                self.sessions.append(session)
                self.job_sessions[job.name] = session
                module.run(session, settings, self.available_now)
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
            settings = job_settings(module, job)
            thread = threading.Thread(
                target=self._run_job, args=(job, module, settings), name=job.name, daemon=True
            )
            thread.start()
            threads.append(thread)
            self.threads[job.name] = thread
            print(f"[engine] {job.name}: {job.script}, trigger {settings.trigger_interval}")
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
        """Hands over each job named by a file in `requests`: stops its query (and any
        query its script restarts meanwhile, from a failure), then, once its thread has
        ended, deletes the request, which tells `stop-job` that the checkpoint is free."""
        for job in JOBS:
            request = requests / job.name
            if request.exists():
                self.handed_over.add(job.name)
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
        for session in self.sessions:
            for query in session.streams.active:
                query.stop()
        for thread in threads:
            thread.join(timeout=30)


def build_base_session() -> SparkSession:
    from pyspark.sql import SparkSession

    builder = SparkSession.builder.appName(APP_NAME)
    for key, value in UI_CONF.items():
        builder = builder.config(key, value)
    spark = builder.getOrCreate()
    spark.sparkContext.setLogLevel("WARN")
    # The join's: its sessions, and the others', are sessions of this one's context.
    load_script("sparkpykafkajoin.py").drop_unused_hadoop_defaults(spark)
    return spark


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
