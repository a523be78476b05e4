"""make run's Spark engine: each job is its script's query, in a session and an output
stream of its own, restarted after a failure; the engine's defaults where the environment
sets none."""

import io
import math
import re
import sys
import threading
import time
import types
from xml.etree import ElementTree

import pytest
from pyspark.errors import StreamingQueryException

from stedi.app import pipeline_status
from stedi.stack import engine, pipeline
from stedi.stack.pipeline import Follower
from stedi.stack.process import StackError


def script_default(job: engine.Job, variable: str) -> str:
    """The default a script reads for `variable` (`env("VARIABLE") or "default"`)."""
    source = (engine.ROOT / job.script).read_text()
    return re.search(rf'env\("{variable}"\) or "([^"]+)"', source).group(1)


def spark_default(key: str) -> str:
    """A setting of conf/spark-defaults.conf, which bin/submit gives every driver."""
    for line in (engine.ROOT / "conf" / "spark-defaults.conf").read_text().splitlines():
        if line.split() and line.split()[0] == key:
            return line.split()[1]
    raise KeyError(key)


@pytest.mark.parametrize("job", engine.JOBS, ids=lambda job: job.name)
def test_each_job_is_its_scripts_start_query_and_main(job):
    module = engine.load_script(job.script)
    assert callable(module.start_query) and callable(module.main)
    assert module.QUERY_NAME == job.query  # the name make run's prefixes and the panel use
    assert (engine.ROOT / job.wrapper).exists()


def test_the_join_triggers_every_half_second_the_others_every_ten(monkeypatch):
    triggers = {job.name: script_default(job, "STEDI_TRIGGER_INTERVAL") for job in engine.JOBS}
    assert triggers == {
        "customers": "10 seconds",
        "risk": "10 seconds",
        "join": "0.5 seconds",
        "score": "10 seconds",
    }


def test_every_trigger_reports_before_the_status_panel_calls_its_job_late():
    """A job with data reports progress once per trigger; an idle one at the first trigger
    at least the idle interval after its last report, so a trigger a little early waits one
    more. The graph page's panel turns a job amber AMBER_AGE_S after its last report.
    The longest gap, with a batch of up to AMBER_BATCH_S, stays under that. (Spark counts
    the idle interval from a batch's end: after a batch over AMBER_BATCH_S the next idle
    report may wait one trigger more, but that batch already shows amber.)"""
    idle_s = float(spark_default("spark.sql.streaming.noDataProgressEventInterval").rstrip("s"))
    for job in engine.JOBS:
        number, unit = script_default(job, "STEDI_TRIGGER_INTERVAL").split()
        assert unit == "seconds"
        trigger = float(number)
        # Never shorter than one trigger, so also the gap of a job with data.
        longest_gap = trigger * (math.floor(idle_s / trigger) + 1)
        assert longest_gap + pipeline_status.AMBER_BATCH_S <= pipeline_status.AMBER_AGE_S, job


class FailingQuery:
    """A query that fails in `awaitTermination`, after a batch or before its first."""

    name = "q"

    def __init__(self, ran: bool):
        self.lastProgress = {"batchId": 0} if ran else None

    def awaitTermination(self):
        raise StreamingQueryException("the broker is gone")


class RecordedWaits(threading.Event):
    def __init__(self):
        super().__init__()
        self.waits = []

    def wait(self, timeout=None):
        self.waits.append(timeout)
        return False


def test_a_failed_query_restarts_with_a_doubling_delay_reset_after_progress(monkeypatch, capsys):
    monkeypatch.setattr(engine, "RESTART_DELAYS_S", (1.0, 4.0))
    queries = [FailingQuery(ran=r) for r in (False, False, False, False, True, False)]
    last = FakeQuery()
    last.stop()  # the last one ends without a failure
    starts = iter([*queries, last])
    stopped = RecordedWaits()
    engine.supervise(lambda: next(starts), stopped, available_now=False)
    assert stopped.waits == [1.0, 2.0, 4.0, 4.0, 1.0, 2.0]
    assert next(starts, None) is None  # every query was started
    lines = capsys.readouterr().out.splitlines()
    assert lines[0] == "[q] failed, restarting in 1 s: the broker is gone"


def test_an_available_now_query_that_fails_fails_the_job():
    with pytest.raises(StreamingQueryException, match="the broker is gone"):
        engine.supervise(lambda: FailingQuery(ran=True), threading.Event(), available_now=True)


def test_each_thread_writes_to_its_own_stream_and_others_to_the_default():
    default, mine = io.StringIO(), io.StringIO()
    routed = engine.ThreadRoutedStream(default)

    def job():
        routed.route(mine)
        print("a job's line", file=routed)

    thread = threading.Thread(target=job)
    thread.start()
    thread.join()
    print("the engine's line", file=routed)
    assert mine.getvalue() == "a job's line\n"
    assert default.getvalue() == "the engine's line\n"


def test_make_run_shows_each_log_with_its_prefix_and_at_ctrl_c_skips_cancelled_batches(
    tmp_path, capsys
):
    log = tmp_path / "spark.log"
    log.write_text("an earlier run's line\n")
    follower = Follower("spark", log)
    with open(log, "a") as f:
        f.write("[engine] stopping the queries\n")
        f.write("26/11/30 10:48:03 ERROR Utils: Aborting task\n")
        f.write("org.apache.spark.TaskKilledException: Stage cancelled\n")
        f.write("\tat org.apache.spark.executor.Executor.run(Executor.scala:1)\n")
        f.write("26/11/30 10:48:03 WARN ProcessingTimeExecutor: falling behind\n")
        f.write("[customer-risk-join] batch 80: 16 rows in\n")
        f.write("a line still being writ")
    follower.poll(stopping=True)
    assert capsys.readouterr().out.splitlines() == [
        "     spark | [engine] stopping the queries",
        "     spark | [customer-risk-join] batch 80: 16 rows in",
    ]
    with open(log, "a") as f:
        f.write("ten\n26/11/30 10:49:00 ERROR Something: while running\n")
    follower.poll()  # while running, errors show
    assert capsys.readouterr().out.splitlines() == [
        "     spark | a line still being written",
        "     spark | 26/11/30 10:49:00 ERROR Something: while running",
    ]


def test_make_run_shows_each_querys_lines_of_the_engines_log_under_its_jobs_prefix(
    tmp_path, capsys
):
    log = tmp_path / "spark.log"
    follower = Follower("spark", log, pipeline.QUERY_PREFIXES)
    log.write_text("[customer-risk-join] batch 81: 2 rows in\n[engine] metrics: none\n")
    follower.poll()
    assert capsys.readouterr().out.splitlines() == [
        "      join | [customer-risk-join] batch 81: 2 rows in",
        "     spark | [engine] metrics: none",
    ]


class FakeQuery:
    name = "fake"
    lastProgress = None

    def __init__(self):
        self.stopped = threading.Event()

    def awaitTermination(self):
        self.stopped.wait(30)

    @property
    def isActive(self):
        return not self.stopped.is_set()

    def stop(self):
        self.stopped.set()


class FakeSession:
    """A job's session: its query once the job's `start_query` started one."""

    def __init__(self):
        self.conf = types.SimpleNamespace(set=lambda key, value: None)
        self.streams, self.query = self, None
        self.pools: list[str] = []  # the scheduler pools the job threads chose
        self.sparkContext = types.SimpleNamespace(
            setLocalProperty=lambda key, value: self.pools.append(value)
        )

    def newSession(self):
        return FakeSession()

    @property
    def active(self):
        return [self.query] if self.query is not None and self.query.isActive else []


def start_query(session, available_now):
    """A script's `start_query`: a query that runs until something stops it."""
    session.query = FakeQuery()
    return session.query


@pytest.fixture
def fake_engine(capsys, monkeypatch, tmp_path):  # capsys first: set up first, undone last
    """The engine's four job threads on fake sessions and queries (no Spark)."""
    monkeypatch.setattr(sys, "stdout", sys.stdout)  # the engine reroutes both: restore them
    monkeypatch.setattr(sys, "stderr", sys.stderr)
    module = types.SimpleNamespace(start_query=start_query)
    monkeypatch.setattr(engine, "load_script", lambda script: module)
    monkeypatch.setattr(engine, "route_jvm_console", lambda spark, path: False)
    fake = engine.Engine(FakeSession(), tmp_path)
    threads = fake.start()
    deadline = time.monotonic() + 10
    while not all(fake.job_queries().values()):
        assert time.monotonic() < deadline, "the fake jobs did not start their queries"
        time.sleep(0.01)
    yield fake
    fake.stop(threads)


def test_a_requested_stop_ends_that_job_alone_and_says_how_to_run_it(fake_engine, tmp_path, capsys):
    requests = tmp_path / "stop-job"
    requests.mkdir()
    (requests / "join").touch()
    fake_engine.take_stop_requests(requests)  # stops the join's query
    fake_engine.threads["join"].join(10)
    assert not fake_engine.threads["join"].is_alive()
    fake_engine.take_stop_requests(requests)  # its thread has ended: the request is done
    assert not (requests / "join").exists()
    assert "[engine] join: stopped on request; run ./submit-join.sh to run it yourself" in (
        capsys.readouterr().out
    )
    running = {name for name, query in fake_engine.job_queries().items() if query}
    assert running == {"customers", "risk", "score"}  # the engine's metrics: join inactive
    assert not fake_engine.done.is_set(), "a requested stop does not end the engine"


def test_a_job_that_ends_by_itself_still_ends_the_engine(fake_engine):
    fake_engine.job_queries()["risk"].stop()  # its query ends without a failure
    assert fake_engine.done.wait(10)


def test_stop_job_asks_the_engine_and_returns_once_the_query_stopped(monkeypatch, tmp_path, capsys):
    monkeypatch.setattr(pipeline, "STOP_REQUESTS", tmp_path / "stop-job")
    monkeypatch.setattr(pipeline, "engine_running", lambda: True)

    def engine_takes_it():  # the engine's loop, once the query has stopped
        request = tmp_path / "stop-job" / "join"
        deadline = time.monotonic() + 10
        while not request.exists() and time.monotonic() < deadline:
            time.sleep(0.05)
        request.unlink()

    taker = threading.Thread(target=engine_takes_it)
    taker.start()
    pipeline.stop_engine_job("join", timeout=20)
    taker.join()
    assert "./submit-join.sh runs it alone from the same checkpoint" in capsys.readouterr().out


def test_stop_job_refuses_an_unknown_job_and_a_missing_make_run(monkeypatch, tmp_path):
    monkeypatch.setattr(pipeline, "STOP_REQUESTS", tmp_path / "stop-job")
    monkeypatch.setattr(pipeline, "engine_running", lambda: False)
    with pytest.raises(StackError, match="make run's jobs are customers, risk, join, score"):
        pipeline.stop_engine_job("joins")
    with pytest.raises(StackError, match="make run is not running"):
        pipeline.stop_engine_job("join")
    assert not (tmp_path / "stop-job" / "join").exists()


def test_the_join_goes_first_among_the_engines_scheduler_pools():
    pools = {p.get("name"): p for p in ElementTree.parse(engine.FAIR_SCHEDULER).iter("pool")}
    assert set(pools) <= {job.name for job in engine.JOBS}  # a pool is named after its job
    join = pools["join"]
    assert int(join.findtext("weight")) > 1 and int(join.findtext("minShare")) >= 1


def test_each_job_submits_its_tasks_in_its_own_pool(fake_engine):
    assert sorted(fake_engine.spark.pools) == sorted(job.name for job in engine.JOBS)
