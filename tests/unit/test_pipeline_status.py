"""The graph page's status panel: each part's line and colour from its metrics (pure), and
/api/pipeline-status in-process, reading real metrics endpoints once for all viewers."""

import pytest

from stedi.app import pipeline_status
from stedi.app.pipeline_status import JOBS, parse, status_lines
from tests.app_in_process import app_in_process
from tests.app_server import logged_in
from tests.metrics_support import Endpoint, jobs_text, source_text


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


def test_the_panel_api_needs_a_login_and_scrapes_once_for_many_viewers(monkeypatch):
    jobs, source = Endpoint(jobs_text(join__job_active=0)), Endpoint(source_text())
    monkeypatch.setattr(pipeline_status, "CACHE_SECONDS", 60)
    try:
        with app_in_process(
            spark_metrics_port=jobs.port, redis_source_metrics_port=source.port
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
