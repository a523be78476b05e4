"""make run's Spark engine: each job gets its script's settings, the engine's trickle
defaults where the environment sets none, and its own output stream."""

import io
import threading

import pytest

from stedi.stack import engine
from stedi.stack.pipeline import Follower


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
    assert customers.trigger_interval == "5 seconds"


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
