"""The graph page's status panel in real headless Chromium: the app (real, on the stack's
Redis and Kafka) reads stand-in metrics endpoints of the engine and the source; the page
shows each part's line and turns a stopped job red within 10 s, then green again."""

import uuid

import pytest
from playwright.sync_api import expect, sync_playwright

from tests.app_server import AppServer
from tests.browser.test_graph import CHROMIUM, CHROMIUM_ARGS, log_in, page_errors
from tests.metrics_support import Endpoint, jobs_text, source_text
from tests.stack_support import create_topics

pytestmark = [pytest.mark.integration, pytest.mark.browser]

PARTS = ("redis source", "customers", "risk", "join", "score")


@pytest.fixture(scope="module")
def panel_app(stack, tmp_path_factory):
    topic = f"stedi-events-panel-{uuid.uuid4().hex[:8]}"
    create_topics(stack, topic)
    jobs, source = Endpoint(jobs_text()), Endpoint(source_text())
    work = tmp_path_factory.mktemp("panel")
    env = {
        "STEDI_EVENTS_TOPIC": topic,
        "STEDI_SPARK_METRICS_PORT": str(jobs.port),
        "STEDI_REDIS_SOURCE_METRICS_PORT": str(source.port),
        "STEDI_STACK_DIR": str(work),  # no wrapper's driver announced: the engine's lines only
    }
    server = AppServer(env, work / "app.log")
    server.jobs = jobs
    yield server
    server.stop()
    jobs.close()
    source.close()


def state_of(page, part: str):
    return page.locator(f'#pipeline-status tr[data-part="{part}"] td').nth(1)


@pytest.fixture
def page():
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        yield browser.new_page(viewport={"width": 1100, "height": 900})
        browser.close()


def test_the_panel_shows_every_part_and_a_stopped_job_red_within_10_s(panel_app, page):
    errors = page_errors(page)  # a script the CSP blocks shows here
    log_in(page, panel_app.url)
    page.goto(f"{panel_app.url}/graph")
    for part in PARTS:
        expect(state_of(page, part)).to_have_text("green")
    panel_app.jobs.text = jobs_text(join__job_active=0)  # the join stops
    expect(state_of(page, "join")).to_have_text("red", timeout=10_000)
    expect(page.locator('#pipeline-status tr[data-part="join"]')).to_contain_text("not running")
    expect(state_of(page, "score")).to_have_text("green")
    panel_app.jobs.text = jobs_text()  # restarted
    expect(state_of(page, "join")).to_have_text("green", timeout=10_000)
    assert errors == [], errors
