"""make run's Spark engine: each job gets its script's settings, the engine's trickle
defaults where the environment sets none, and its own output stream."""

import io
import math
import sys
import threading
import time
import types

import pytest

from stedi.app import pipeline_status
from stedi.stack import engine, pipeline
from stedi.stack.pipeline import Follower
from stedi.stack.process import StackError


@pytest.mark.parametrize("job", engine.JOBS, ids=lambda job: job.name)
def test_each_job_runs_its_scripts_own_session_settings_start_and_run(job):
    module = engine.load_script(job.script)
    settings = module.Settings()
    conf = module.session_conf(settings)
    assert conf["spark.sql.session.timeZone"] == "UTC"
    assert conf["spark.sql.streaming.checkpointFileManagerClass"].endswith(
        "FileSystemBasedCheckpointFileManager"
    )
    assert callable(module.start) and callable(module.run)


def test_the_engine_gives_each_job_its_trigger_and_one_partition(monkeypatch):
    monkeypatch.delenv("STEDI_TRIGGER_INTERVAL", raising=False)
    monkeypatch.delenv("STEDI_SHUFFLE_PARTITIONS", raising=False)
    by_name = {job.name: job for job in engine.JOBS}
    join = engine.job_settings(engine.load_script("sparkpykafkajoin.py"), by_name["join"])
    customers = engine.job_settings(
        engine.load_script("sparkpyrediskafkastreamtoconsole.py"), by_name["customers"]
    )
    assert (join.trigger_interval, join.shuffle_partitions) == ("0.5 seconds", "1")
    assert customers.trigger_interval == "10 seconds"


def test_every_trigger_reports_before_the_status_panel_calls_its_job_late():
    """A job with data reports progress once per trigger; an idle one at the first trigger
    at least IDLE_PROGRESS_S after its last report, so a trigger a little early waits one
    more. The graph page's panel turns a job amber AMBER_AGE_S after its last report.
    The longest gap, with a batch of up to AMBER_BATCH_S, stays under that. (Spark counts
    the idle interval from a batch's end: after a batch over AMBER_BATCH_S the next idle
    report may wait one trigger more, but that batch already shows amber.)"""
    for job in engine.JOBS:
        number, unit = job.trigger.split()
        assert unit == "seconds"
        trigger = float(number)
        # Never shorter than one trigger, so also the gap of a job with data.
        longest_gap = trigger * (math.floor(engine.IDLE_PROGRESS_S / trigger) + 1)
        assert longest_gap + pipeline_status.AMBER_BATCH_S <= pipeline_status.AMBER_AGE_S, job


def test_settings_from_the_environment_win_over_the_engines(monkeypatch):
    monkeypatch.setenv("STEDI_TRIGGER_INTERVAL", "2 seconds")
    monkeypatch.setenv("STEDI_SHUFFLE_PARTITIONS", "3")
    job = next(job for job in engine.JOBS if job.name == "score")
    settings = engine.job_settings(engine.load_script(job.script), job)
    assert (settings.trigger_interval, settings.shuffle_partitions) == ("2 seconds", "3")


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


class FakeQuery:
    def __init__(self):
        self.stopped = threading.Event()

    @property
    def isActive(self):
        return not self.stopped.is_set()

    def stop(self):
        self.stopped.set()


class FakeSession:
    """A job's session: its query once the job's `run` started one."""

    def __init__(self):
        self.conf = types.SimpleNamespace(set=lambda key, value: None)
        self.streams, self.query = self, None

    def newSession(self):
        return FakeSession()

    @property
    def active(self):
        return [self.query] if self.query is not None and self.query.isActive else []


def run_until_stopped(session, settings, available_now):
    """A script's `run`: its query until something stops it (it then returns, as the
    scripts' `run` does for a query stopped without an error)."""
    session.query = FakeQuery()
    session.query.stopped.wait(30)


@pytest.fixture
def fake_engine(capsys, monkeypatch, tmp_path):  # capsys first: set up first, undone last
    """The engine's four job threads on fake sessions and queries (no Spark)."""
    monkeypatch.setattr(sys, "stdout", sys.stdout)  # the engine reroutes both: restore them
    monkeypatch.setattr(sys, "stderr", sys.stderr)
    module = types.SimpleNamespace(session_conf=lambda settings: {}, run=run_until_stopped)
    monkeypatch.setattr(engine, "load_script", lambda script: module)
    monkeypatch.setattr(
        engine, "job_settings", lambda module, job: types.SimpleNamespace(trigger_interval="1 s")
    )
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
    fake_engine.job_queries()["risk"].stop()  # as a failed script's run returns
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
