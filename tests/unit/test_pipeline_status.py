"""The graph page's status panel: each part's line and colour from its metrics (pure), and
/api/pipeline-status in-process, reading real metrics endpoints once for all viewers.

A job run alone is read from its driver's Spark PrometheusServlet: tests/data's
spark-servlet-join.txt is that servlet's text, captured from `./submit-join.sh` (Spark
4.2.0) after its join read 40 customers."""

from pathlib import Path

import pytest

from stedi.app import pipeline_status
from stedi.app.pipeline_status import (
    JOB_SCRIPTS,
    JOBS,
    Driver,
    loopback_servlet,
    parse,
    query_gauges,
    status_lines,
)
from stedi.stack import drivers, engine
from tests.app_in_process import app_in_process
from tests.app_server import logged_in
from tests.metrics_support import Endpoint, jobs_text, source_text
from tests.scripts import load_script

SERVLET = (Path(__file__).parents[1] / "data" / "spark-servlet-join.txt").read_text()


def states(lines) -> dict[str, str]:
    return {line["name"]: line["state"] for line in lines}


def test_all_parts_healthy_are_green_with_their_figures():
    lines = status_lines(parse(jobs_text()), parse(source_text()))
    assert states(lines) == dict.fromkeys(["redis source", *JOBS], "green")
    join = next(line for line in lines if line["name"] == "join")
    assert (join["rowsPerSecond"], join["batchSeconds"], join["stateRows"]) == (20, 0.4, 10)
    assert lines[0]["published"] == 12


@pytest.mark.parametrize(
    "change, state, reason",
    [
        ({"join__job_active": 0}, "red", "not running"),
        ({"join__last_progress_age_seconds": 45}, "red", "no progress for 45 s"),
        ({"join__last_progress_age_seconds": 20}, "amber", "last progress 20 s ago"),
        ({"join__offsets_behind_max": 500}, "amber", "500 records behind"),
        ({"join__batch_seconds": 9}, "amber", "batches take 9.0 s"),
        ({"join__last_batch_dead_letters": 2}, "amber", "dead letters"),
    ],
)
def test_each_threshold_colours_the_jobs_line(change, state, reason):
    lines = status_lines(parse(jobs_text(**change)), parse(source_text()))
    join = next(line for line in lines if line["name"] == "join")
    assert join["state"] == state and reason in "; ".join(join["reasons"])
    assert states(lines)["score"] == "green"


def test_the_source_is_red_when_not_streaming_and_amber_when_far_behind():
    assert status_lines(None, parse(source_text(streaming=0)))[0]["state"] == "red"
    assert status_lines(None, parse(source_text(lag=5_000_000)))[0]["state"] == "amber"


def test_parts_whose_metrics_do_not_answer_are_red():
    lines = status_lines(None, None)
    assert states(lines) == dict.fromkeys(["redis source", *JOBS], "red")
    assert "no metrics" in lines[0]["reasons"][0] and "no metrics" in lines[1]["reasons"][0]


def test_the_panel_api_needs_a_login_and_scrapes_once_for_many_viewers(monkeypatch, tmp_path):
    jobs, source = Endpoint(jobs_text(join__job_active=0)), Endpoint(source_text())
    monkeypatch.setattr(pipeline_status, "CACHE_SECONDS", 60)
    try:
        with app_in_process(
            spark_metrics_port=jobs.port,
            redis_source_metrics_port=source.port,
            stack_dir=str(tmp_path),  # no driver announced there
        ) as app:
            assert app.client().get("/api/pipeline-status").status_code == 401
            viewers = [logged_in(app)[0] for _ in range(3)]
            answers = [viewer.get("/api/pipeline-status") for viewer in viewers]
            assert {answer.status_code for answer in answers} == {200}
            lines = answers[0].json()["lines"]
            assert states(lines) == {
                "redis source": "green",
                "customers": "green",
                "risk": "green",
                "join": "red",
                "score": "green",
            }
            assert (jobs.scrapes, source.scrapes) == (1, 1)  # one scrape for three viewers
    finally:
        jobs.close()
        source.close()


def test_the_graph_page_loads_the_panel_from_a_static_script():
    with app_in_process() as app:
        client, _ = logged_in(app)
        page = client.get("/graph").text
        assert 'id="pipeline-status"' in page
        assert '<script src="/static/status.js"></script>' in page
        assert client.get("/static/status.js").status_code == 200


def test_the_jobs_scripts_and_query_names_are_make_runs_and_the_scripts_own():
    assert [(job.name, job.script) for job in engine.JOBS] == [
        (name, script) for name, (script, _) in JOB_SCRIPTS.items()
    ]
    for script, query in JOB_SCRIPTS.values():
        assert load_script(script).QUERY_NAME == query


def test_a_real_drivers_servlet_holds_its_querys_gauges_and_no_other_jobs():
    samples = parse(SERVLET)  # prometheus_client's parser takes Spark's text
    gauges = query_gauges(samples, "customer-risk-join")
    assert gauges["states_rowsTotal"] == 80 and gauges["latency"] == 10
    assert {"processingRate_total", "inputRate_total"} <= gauges.keys()
    assert query_gauges(samples, "risk-score") == {}


def test_a_job_the_engine_does_not_run_gets_its_announced_drivers_line():
    engine_without_join = parse(jobs_text(join__job_active=0))
    driver = Driver(pid=4242, samples=parse(SERVLET))
    lines = status_lines(engine_without_join, parse(source_text()), {"join": driver})
    join = next(line for line in lines if line["name"] == "join")
    assert join["state"] == "green" and join["reasons"] == []
    assert (join["stateRows"], join["batchSeconds"], join["rowsPerSecond"]) == (80, 0.01, 0.0)
    assert "offsetsBehind" not in join and "age" not in join and "deadLetters" not in join
    assert "run alone (sparkpykafkajoin.py, pid 4242)" in join["note"]
    # without make run at all, the driver's line too; the others have no metrics
    alone = {line["name"]: line for line in status_lines(None, None, {"join": driver})}
    assert alone["join"]["state"] == "green"
    assert "no metrics from the Spark engine" in alone["score"]["reasons"]


def test_a_driver_that_is_gone_or_runs_another_query_is_red_and_the_engine_wins():
    source, stopped = parse(source_text()), parse(jobs_text(join__job_active=0))
    gone = status_lines(stopped, source, {"join": Driver(pid=7, samples=None)})
    assert gone[3]["state"] == "red" and "not running" in gone[3]["reasons"][0]
    stopped = parse(jobs_text(join__job_active=0, score__job_active=0))
    other = status_lines(stopped, source, {"score": Driver(pid=7, samples=parse(SERVLET))})
    assert other[4]["state"] == "red" and "has no risk-score query" in other[4]["reasons"][0]
    # the engine runs the join again: the old driver's announcement no longer counts
    running = status_lines(parse(jobs_text()), source, {"join": Driver(pid=7, samples=None)})
    assert running[3]["state"] == "green" and "note" not in running[3]


def test_a_slow_drivers_batches_make_its_line_amber():
    slow = SERVLET.replace(
        'customer_risk_join_latency_Value{type="gauges"} 10',
        'customer_risk_join_latency_Value{type="gauges"} 9000',
    )
    lines = status_lines(None, None, {"join": Driver(pid=1, samples=parse(slow))})
    assert lines[3]["state"] == "amber" and lines[3]["reasons"] == ["batches take 9.0 s"]


def test_only_a_loopback_driver_is_scraped():
    assert loopback_servlet({"ui": "http://127.0.0.1:41234"}) == (
        "http://127.0.0.1:41234/metrics/prometheus/"
    )
    assert loopback_servlet({"ui": "http://localhost:41234"}) is not None
    for ui in ("http://10.0.0.8:41234", "file:///etc/passwd", "http://127.0.0.1", ""):
        assert loopback_servlet({"ui": ui}) is None, ui


def test_the_panel_api_reads_a_driver_announced_in_the_stack_dir_once_for_all(
    monkeypatch, tmp_path
):
    """make run's engine says the join stopped; ./submit-join.sh announced its driver."""
    jobs, source = Endpoint(jobs_text(join__job_active=0)), Endpoint(source_text())
    servlet = Endpoint(SERVLET)
    drivers.announce(tmp_path, "sparkpykafkajoin.py", pid=4242, port=servlet.port)
    monkeypatch.setattr(pipeline_status, "CACHE_SECONDS", 60)
    try:
        with app_in_process(
            spark_metrics_port=jobs.port,
            redis_source_metrics_port=source.port,
            stack_dir=str(tmp_path),
        ) as app:
            viewers = [logged_in(app)[0] for _ in range(3)]
            answers = [viewer.get("/api/pipeline-status").json()["lines"] for viewer in viewers]
            assert states(answers[0]) == dict.fromkeys(["redis source", *JOBS], "green")
            assert answers[0] == answers[2]
            assert servlet.scrapes == 1  # once for three viewers, as the engine's
            assert "pid 4242" in answers[0][3]["note"]
    finally:
        for endpoint in (jobs, source, servlet):
            endpoint.close()
