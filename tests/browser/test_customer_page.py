"""The caregiver's view of a customer in real headless Chromium, on the real app, Redis and
Kafka: six tests run by hand on the timer page, then the customer's page.

The page's clock is Playwright's (page.clock), paused between clicks, so each test lasts
exactly the seconds chosen here and the scores are known in advance. The browser runs in
Asia/Kolkata (UTC+05:30, no daylight saving), so local times differ from the UTC ones.
"""

import json
import re
import uuid
from datetime import datetime, timedelta, timezone

import pytest
from playwright.sync_api import expect, sync_playwright

from stedi.app.risk import StepTest, risk_score
from stedi.stack import services
from tests.app_server import AppServer
from tests.browser.test_graph import CHROMIUM, CHROMIUM_ARGS, log_in, page_errors
from tests.stack_support import TopicReader, create_topics

pytestmark = [pytest.mark.integration, pytest.mark.browser]

# docs/customer.png, shown in the README, is a copy of this file from a test run.
SCREENSHOT = services.ROOT / "build" / "screenshots" / "customer.png"
TIME_ZONE, UTC_OFFSET = "Asia/Kolkata", timedelta(hours=5, minutes=30)
DURATIONS_S = [100, 90, 95, 105, 60, 71.5]  # slower, then faster again
GAP_MS = 60_000  # between one test's end and the next one's start


@pytest.fixture(scope="module")
def app(stack, tmp_path_factory):
    topic = f"stedi-events-customer-page-{uuid.uuid4().hex[:8]}"
    create_topics(stack, topic)
    server = AppServer({"STEDI_EVENTS_TOPIC": topic}, tmp_path_factory.mktemp("app") / "app.log")
    yield server
    server.stop()


def stop_ms(iso: str) -> int:
    return round(datetime.fromisoformat(iso).timestamp() * 1000)  # 3.11 reads the Z


def local(iso: str) -> str:
    """The page's rendering of an ISO time in the browser's zone (app.js, localTime)."""
    return (
        datetime.fromisoformat(iso).astimezone(timezone(UTC_OFFSET)).strftime("%Y-%m-%d %H:%M:%S")
    )


def run_test_by_hand(page, seconds: float) -> None:
    """Start, `seconds` on the page's clock, 30 clicks on Step: the timer page stores it."""
    page.click("#start")
    page.clock.fast_forward(round(seconds * 1000))
    for _ in range(30):
        page.click("#step")
    expect(page.locator("#result")).to_contain_text("Stored: Bea Browser")
    page.clock.fast_forward(GAP_MS)


def test_six_tests_by_hand_show_on_the_customers_page_with_scores_and_a_chart(app, stack):
    events = TopicReader(stack, app.env["STEDI_EVENTS_TOPIC"])
    email = f"bea.{uuid.uuid4().hex[:8]}@test.com"
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        page = browser.new_page(viewport={"width": 1100, "height": 900}, timezone_id=TIME_ZONE)
        errors = page_errors(page)  # a script the CSP blocks, a failed chart
        log_in(page, app.url)
        page.goto(f"{app.url}/customers/new")
        page.fill("input[name=customerName]", "Bea Browser")
        page.fill("input[name=email]", email)
        page.fill("input[name=phone]", "8015551212")
        page.fill("input[name=birthDay]", "1948-05-06")
        page.click("main button[type=submit]")
        expect(page.locator("#created")).to_contain_text("Bea Browser")

        # The tests happened over the last hour: the app takes them (at most 5 min ahead).
        an_hour_ago = datetime.now(timezone.utc) - timedelta(hours=1)
        page.clock.install(time=an_hour_ago)
        page.clock.pause_at(an_hour_ago)
        page.goto(f"{app.url}/timer")
        page.select_option("#customer", email)
        for seconds in DURATIONS_S:
            run_test_by_hand(page, seconds)
        page.clock.resume()

        published = events.read(lambda records: len(records) >= 3)
        events.close()
        published_scores = [json.loads(r.value)["score"] for r in published]
        stored = page.request.get(f"{app.url}/api/customers/{email}").json()["tests"]
        steps = [StepTest(stop_ms(t["stopTime"]), t["testTime"]) for t in reversed(stored)]
        assert [s.duration_ms for s in steps] == [round(d * 1000) for d in DURATIONS_S]
        expected = [risk_score(steps[: i + 1]).score for i in range(3, 6)]
        assert published_scores == expected == [-5.0, 10.0, 34.25]

        page.goto(f"{app.url}/customers/{email}")
        rows = page.locator("#tests tbody tr")
        expect(rows).to_have_count(6)
        shown = [[cell.inner_text() for cell in row.locator("td").all()] for row in rows.all()]
        datetimes = page.locator("#tests tbody time").evaluate_all(
            "times => times.map(t => t.dateTime)"
        )
        for (stopped, _, steps_cell, _), iso in zip(shown, datetimes, strict=True):
            assert not re.fullmatch(r"\d{10,}", stopped)  # not epoch numbers
            assert stopped == local(iso) != iso[:19].replace("T", " ")  # local, not UTC
            assert steps_cell == "30"
        newest_first = [row[3] for row in shown]
        assert newest_first[3:] == ["needs 4 tests"] * 3
        assert [float(s) for s in reversed(newest_first[:3])] == published_scores
        assert [row[1] for row in shown] == [f"{d:.1f}" for d in reversed(DURATIONS_S)]
        expect(page.locator("#latest-score")).to_have_text("34.25")
        expect(page.locator("#latest-trend")).to_have_text("improved")
        expect(page.locator("#latest-date")).to_have_text(local(datetimes[0]))
        plotted = page.evaluate("Chart.getChart('score-chart').data.datasets[0].data")
        assert plotted == published_scores
        SCREENSHOT.parent.mkdir(parents=True, exist_ok=True)
        page.screenshot(path=str(SCREENSHOT), full_page=True)

        # The timer page's list: the last test, in local time, and the latest score.
        page.goto(f"{app.url}/timer")
        link = page.locator(f'a[href="/customers/{email.replace("@", "%40")}"]')
        row = page.locator("#customer-list tbody tr", has=link)
        expect(row.locator("time")).to_have_text(local(datetimes[0]))
        expect(row).to_contain_text("34.25 improved")
        assert errors == []
        browser.close()
