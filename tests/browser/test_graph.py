"""The STEDI app in real headless Chromium, fed by the real pipeline.

Redis -> Redis source -> Kafka -> the Spark join (its query in the test process's
Spark) -> Kafka -> the app's graph. Debian's chromium is driven by Playwright with executable_path:
no browser is downloaded.
"""

import json
import time
import uuid

import pytest
from playwright.sync_api import expect, sync_playwright

from stedi.stack import services
from tests.app_server import ADMIN_EMAIL, ADMIN_PASSWORD, AppServer
from tests.scripts import join_job
from tests.stack_support import create_topics, produce

pytestmark = [pytest.mark.integration, pytest.mark.browser, pytest.mark.slow]  # a live pipeline

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]
# docs/graph.png, shown in the README, is a copy of this file from a test run.
SCREENSHOT = services.ROOT / "build" / "screenshots" / "graph.png"
POINTS_WANTED = 3
PIPELINE_TIMEOUT_MS = 240_000


@pytest.fixture(scope="module")
def pipeline(stack, kafka_spark, tmp_path_factory):
    """The app (simulation at 30x) and the Spark join's query (in this process's Spark:
    the wrappers have tests of their own), on topics of their own."""
    suffix = uuid.uuid4().hex[:8]
    env = {
        "STEDI_EVENTS_TOPIC": f"stedi-events-browser-{suffix}",
        "KAFKA_RISK_TOPIC": f"customer-risk-browser-{suffix}",
        "STEDI_DEAD_LETTER_TOPIC": f"dead-letter-browser-{suffix}",
        "STEDI_SIM_SPEED": "30",
        "STEDI_TRIGGER_INTERVAL": "1 second",
    }
    create_topics(stack, env["STEDI_EVENTS_TOPIC"], env["KAFKA_RISK_TOPIC"],
                  env["STEDI_DEAD_LETTER_TOPIC"])  # fmt: skip
    work = tmp_path_factory.mktemp("browser")
    join_env = {**env, "STEDI_CHECKPOINT_DIR": str(work / "checkpoints")}
    with kafka_spark.streaming(join_job, join_env):  # stops even when the app fails
        app = AppServer(env, work / "app.log")
        try:
            yield app
        finally:
            app.stop()


@pytest.fixture
def browser_page():
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        page = browser.new_page(viewport={"width": 1100, "height": 900})
        dialogs = []
        page.on("dialog", lambda dialog: (dialogs.append(dialog.message), dialog.dismiss()))
        page.dialogs = dialogs
        yield page
        browser.close()


def page_errors(page) -> list[str]:
    """The page's console errors and uncaught exceptions from now on (a script the CSP
    blocks shows here); the favicon Chromium asks for, which the app has not, is left out."""
    errors = []

    def console(message):
        if message.type == "error" and not message.location["url"].endswith("/favicon.ico"):
            errors.append(f"{message.text} ({message.location['url']})")

    page.on("console", console)
    page.on("pageerror", lambda exc: errors.append(str(exc)))
    return errors


def log_in(page, url):
    page.goto(f"{url}/login")
    page.fill("input[name=email]", ADMIN_EMAIL)
    page.fill("input[name=password]", ADMIN_PASSWORD)
    page.click("button[type=submit]")
    expect(page).to_have_url(f"{url}/timer")


def test_simulation_fills_the_graph_with_live_points_from_the_pipeline(pipeline, browser_page):
    page = browser_page
    log_in(page, pipeline.url)
    page.check("#simulation-toggle")
    expect(page.locator("#simulation-state")).to_contain_text("on")

    page.goto(f"{pipeline.url}/graph")
    expect(page.locator("#graph-title")).to_have_text("STEDI Population Risk Change by Birth Year")
    # The sign as the original computes it (previous two tests minus the recent two).
    expect(page.locator("#graph-subtitle")).to_have_text(
        "Above zero: improved (faster tests). Below zero: deteriorated (slower tests)."
    )
    rows = page.locator("#points tbody tr")
    expect(rows.nth(POINTS_WANTED - 1)).to_be_attached(timeout=PIPELINE_TIMEOUT_MS)
    for row in rows.all()[:POINTS_WANTED]:
        birth_year, score = (cell.inner_text() for cell in row.locator("td").all())
        assert 1936 <= int(birth_year) <= 1965  # the simulator's 30 customers
        assert -60 <= float(score) <= 60
        if 1950 <= int(birth_year) <= 1960:  # the deteriorating cohort: <= 0, steps of 0.5
            assert float(score) <= 0 and (float(score) * 2).is_integer()
    plotted = page.evaluate("Chart.getChart('risk-chart').data.datasets[0].data.length")
    assert plotted >= POINTS_WANTED
    SCREENSHOT.parent.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(SCREENSHOT), full_page=True)
    page.goto(f"{pipeline.url}/timer")
    page.uncheck("#simulation-toggle")
    expect(page.locator("#simulation-state")).to_contain_text("off")


def test_a_customer_named_like_markup_is_shown_as_text(pipeline, browser_page):
    page = browser_page
    log_in(page, pipeline.url)
    name = "<img src=x onerror=alert(1)>"
    page.goto(f"{pipeline.url}/customers/new")
    page.fill("input[name=customerName]", name)
    page.fill("input[name=email]", f"xss.{uuid.uuid4().hex[:8]}@test.com")
    page.fill("input[name=phone]", "8015551212")
    page.fill("input[name=birthDay]", "1970-01-01")
    page.click("main button[type=submit]")
    expect(page.locator("#created")).to_contain_text(name)
    page.goto(f"{pipeline.url}/timer")
    options = page.locator("#customer option").all_inner_texts()
    assert any(text.startswith(name) for text in options)
    assert page.locator("main img").count() == 0
    assert page.dialogs == []


def test_a_manual_test_of_30_steps_is_stored(pipeline, browser_page):
    page = browser_page
    log_in(page, pipeline.url)
    page.select_option("#customer", "sam.test@test.com")
    page.click("#start")
    page.wait_for_timeout(1_100)  # a test lasts a second at least: 30 quick clicks do not
    for _ in range(30):
        page.click("#step")
    expect(page.locator("#result")).to_contain_text("Stored: Sam Test")


@pytest.fixture(scope="module")
def graph_feed(stack, tmp_path_factory):
    """The app on a risk topic the test writes itself (no Spark), whose live graphs may fall
    only one point behind before the app ends their stream."""
    topic = f"customer-risk-reconnect-{uuid.uuid4().hex[:8]}"
    create_topics(stack, topic)
    log = tmp_path_factory.mktemp("reconnect") / "app.log"
    app = AppServer({"KAFKA_RISK_TOPIC": topic, "STEDI_STREAM_BUFFER": "1"}, log)
    app.topic = topic
    yield app
    app.stop()


def test_a_graph_stream_the_app_drops_reconnects_and_keeps_updating(
    graph_feed, stack, browser_page
):
    page = browser_page
    log_in(page, graph_feed.url)
    page.goto(f"{graph_feed.url}/graph")
    expect(page.locator("#stream-state")).to_have_text("live")
    expect(page.locator("#team-wide")).to_contain_text("team-wide")

    # A burst the browser's stream cannot take at once: the app ends that stream.
    burst = [json.dumps({"birthYear": 1930 + i % 30, "score": 0.5}) for i in range(200)]
    produce(stack, graph_feed.topic, burst)
    deadline = time.monotonic() + 60
    while "ended a live graph stream that fell behind" not in graph_feed.log_path.read_text():
        assert time.monotonic() < deadline, "the app never ended the stream"
        time.sleep(0.5)

    # The browser reconnects by itself and gets the points that come after.
    produce(stack, graph_feed.topic, [json.dumps({"birthYear": 1999, "score": 42.0})])
    expect(page.locator("#points tbody tr", has_text="1999")).to_contain_text("42", timeout=30_000)
    expect(page.locator("#stream-state")).to_have_text("live")
    rows = page.locator("#points tbody tr").count()
    assert rows == 200 % 30 + 1  # the current round (a new stream starts with it) + the new one
