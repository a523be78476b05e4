"""The app's /metrics in-process: Prometheus' text format (read back with prometheus_client's
own parser), the named metrics moving with what the app does, who may read it, and no
personal data in it."""

import copy
import time

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from tests import metrics_support
from tests.app_in_process import app_in_process
from tests.app_server import a_customer, a_test, form_token, logged_in

TOKEN = "a-scraper-token-of-this-test"
# make run's test checks metrics_support.APP; in-process, the Kafka clients' own too.
APP_METRICS = metrics_support.APP | {
    "stedi_app_score_send_failures",
    "stedi_app_kafka_publisher_up",
    "stedi_app_graph_feed_up",
}


@pytest.fixture(scope="module")
def app():
    with app_in_process(metrics_token=TOKEN) as in_process:
        yield in_process


def from_loopback(app) -> httpx.Client:
    """A client whose address is 127.0.0.1 (the TestClient's own is "testclient")."""
    transport = copy.copy(app.test_client._transport)
    transport.client = ("127.0.0.1", 50000)
    return httpx.Client(transport=transport, base_url="http://testserver", timeout=10)


def samples(text: str) -> dict[tuple[str, tuple], float]:
    """(sample name, sorted labels) -> value, parsed by prometheus_client."""
    return {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }


def families(text: str) -> set[str]:
    return {family.name for family in text_string_to_metric_families(text)}


def test_metrics_parse_and_hold_every_named_metric(app):
    response = from_loopback(app).get("/metrics")
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/plain; version=")
    assert families(response.text) == APP_METRICS


def test_counters_move_with_tests_scores_and_failed_logins(app):
    scraper = from_loopback(app)
    before = samples(scraper.get("/metrics").text)
    client, token = logged_in(app)
    customer = a_customer("Mia Metric")
    headers = {"X-CSRF-Token": token}
    assert client.post("/api/customers", json=customer, headers=headers).status_code == 201
    for minutes in (4, 3, 2, 1):  # the 4th test gives a score, which the app publishes
        test = a_test(customer["email"], duration_ms=minutes * 10_000)
        test["stopTime"] -= minutes * 60_000
        test["startTime"] -= minutes * 60_000
        assert client.post("/api/tests", json=test, headers=headers).status_code == 201
    stranger = app.client()
    token = form_token(stranger, "/login")
    wrong = {"email": "nobody@test.com", "password": "wrong", "csrf": token}
    assert stranger.post("/login", data=wrong).status_code == 401
    deadline = time.monotonic() + 10
    while True:  # the publisher sends in the background
        after = samples(scraper.get("/metrics").text)
        if after[("stedi_app_outbox_scores", ())] == 0 or time.monotonic() > deadline:
            break
        time.sleep(0.05)

    def moved(name: str) -> float:
        return after[(name, ())] - before[(name, ())]

    assert moved("stedi_app_tests_stored_total") == 4
    assert moved("stedi_app_scores_published_total") == 1
    assert moved("stedi_app_login_failures_total") == 1
    assert after[("stedi_app_outbox_scores", ())] == 0
    assert after[("stedi_app_scores_published_total", ())] == len(app.publisher.sent)


def test_refused_logins_are_counted_by_form(app):
    scraper = from_loopback(app)
    before = samples(scraper.get("/metrics").text)
    client = app.client()
    token = form_token(client, "/login")
    statuses = [
        client.post(
            "/login", data={"email": "target@test.com", "password": "guess", "csrf": token}
        ).status_code
        for _ in range(6)  # 5 failures per account and window, then refused
    ]
    assert statuses == [401] * 5 + [429]
    after = samples(scraper.get("/metrics").text)
    login = ("stedi_app_refusals_total", (("form", "login"),))
    assert after[login] - before[login] == 1


def test_metrics_need_loopback_a_login_or_the_token(app):
    anonymous = app.client()  # its address is "testclient", not loopback
    refused = anonymous.get("/metrics")
    assert refused.status_code == 403
    assert "stedi_app" not in refused.text
    assert anonymous.get("/metrics", headers={"Authorization": "Bearer wrong"}).status_code == 403
    with_token = anonymous.get("/metrics", headers={"Authorization": f"Bearer {TOKEN}"})
    assert with_token.status_code == 200 and "stedi_app_tests_stored_total" in with_token.text
    client, _ = logged_in(app)
    assert client.get("/metrics").status_code == 200


def test_without_a_token_setting_no_bearer_opens_metrics():
    with app_in_process() as unset:
        answer = unset.client().get("/metrics", headers={"Authorization": "Bearer "})
        assert answer.status_code == 403


def test_metrics_carry_no_customer_email_or_name(app):
    client, token = logged_in(app)
    customer = a_customer("Pia Private")
    headers = {"X-CSRF-Token": token}
    assert client.post("/api/customers", json=customer, headers=headers).status_code == 201
    assert client.post("/api/tests", json=a_test(customer["email"]), headers=headers).status_code
    text = from_loopback(app).get("/metrics").text
    assert "stedi_app_tests_stored_total" in text
    for personal in (customer["email"], "Pia", "@test.com", "caregiver"):
        assert personal not in text
