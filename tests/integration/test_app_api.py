"""The STEDI app's HTTP API against real Redis and Kafka."""

import json
import re

import httpx
import pytest

from tests.app_server import ADMIN_EMAIL, ADMIN_PASSWORD, AppServer
from tests.stack_support import TopicReader, create_topics

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def app(stack, tmp_path_factory):
    import uuid

    events_topic = f"stedi-events-app-{uuid.uuid4().hex[:8]}"
    create_topics(stack, events_topic)
    log = tmp_path_factory.mktemp("app") / "app.log"
    server = AppServer({"STEDI_EVENTS_TOPIC": events_topic}, log)
    server.events_topic = events_topic
    yield server
    server.stop()


def stored(redis_client, entity: str) -> list:
    """The JSON members of a sorted set (other tests may leave non-JSON members)."""
    members = []
    for raw in redis_client.zrange(entity, 0, -1):
        try:
            members.append(json.loads(raw))
        except ValueError:
            continue
    return members


def csrf_of(html: str) -> str:
    return re.search(r'name="csrf-token" content="([^"]+)"', html).group(1)


def logged_in(app) -> tuple[httpx.Client, str]:
    client = httpx.Client(base_url=app.url, timeout=10)
    token = csrf_of(client.get("/login").text)
    response = client.post(
        "/login", data={"email": ADMIN_EMAIL, "password": ADMIN_PASSWORD, "csrf": token}
    )
    assert response.status_code == 303 and response.headers["location"] == "/timer"
    return client, csrf_of(client.get("/timer").text)


def test_health_answers_without_login_and_everything_else_needs_one(app):
    assert httpx.get(f"{app.url}/health").json()["redis"] is True
    assert httpx.get(f"{app.url}/api/customers").status_code == 401
    page = httpx.get(f"{app.url}/timer")
    assert page.status_code == 303 and page.headers["location"] == "/login"


def test_a_wrong_password_is_refused(app):
    client = httpx.Client(base_url=app.url)
    token = csrf_of(client.get("/login").text)
    response = client.post("/login", data={"email": ADMIN_EMAIL, "password": "nope", "csrf": token})
    assert response.status_code == 401 and "Wrong email or password" in response.text
    assert client.get("/api/customers").status_code == 401


def test_posts_without_the_csrf_token_are_refused(app):
    client, _ = logged_in(app)
    response = client.post("/api/customers", json={"customerName": "X"})
    assert response.status_code == 403
    login = httpx.post(f"{app.url}/login", data={"email": ADMIN_EMAIL, "password": ADMIN_PASSWORD})
    assert login.status_code == 403


def test_customer_creation_stores_it_and_bad_input_stores_nothing(app, redis_client, unique):
    client, token = logged_in(app)
    headers = {"X-CSRF-Token": token}
    customer = {
        "customerName": "Ann Api",
        "email": f"ann.{unique}@test.com",
        "phone": "8015551212",
        "birthDay": "1960-02-03",
    }
    assert client.post("/api/customers", json=customer, headers=headers).status_code == 201
    assert customer in stored(redis_client, "Customer")
    before = redis_client.zcard("Customer")
    bad = {**customer, "email": f"bad.{unique}@test.com", "birthDay": "03/02/1960"}
    response = client.post("/api/customers", json=bad, headers=headers)
    assert response.status_code == 400 and "Birth day" in response.json()["error"]
    assert client.post("/api/customers", json=customer, headers=headers).status_code == 400
    assert redis_client.zcard("Customer") == before


def test_the_fourth_test_publishes_the_risk_score_to_stedi_events(app, stack, unique, redis_client):
    client, token = logged_in(app)
    headers = {"X-CSRF-Token": token}
    email = f"risk.{unique}@test.com"
    customer = {"customerName": "Rita Risk", "email": email, "phone": "8015551212",
                "birthDay": "1955-01-01"}  # fmt: skip
    client.post("/api/customers", json=customer, headers=headers)
    reader = TopicReader(stack, app.events_topic)
    scores = []
    # Stops 10 minutes apart; the newest test arrives before the third (a late upload).
    durations = {0: 100_000, 1: 90_000, 3: 105_000, 2: 95_000}
    for minute, duration in durations.items():
        stop = 1_600_070_000_000 + minute * 600_000
        test = {"email": email, "startTime": stop - duration, "stopTime": stop, "totalSteps": 30}
        response = client.post("/api/tests", json=test, headers=headers)
        assert response.status_code == 201
        scores.append(response.json()["score"])
    # (100 + 90) / 2 - (95 + 105) / 2 s by stop time: slower lately, so below zero
    assert scores == [None, None, None, -5.0]
    [record] = reader.read(lambda rs: rs)
    assert json.loads(record.value) == {
        "customer": email,
        "score": -5.0,
        "riskDate": "2020-09-14T08:23:20.000Z",  # the stop time of the newest test
    }
    assert record.key.decode().isdigit()
    tests = stored(redis_client, "RapidStepTest")
    mine = [t for t in tests if t["customer"]["email"] == email]
    assert sorted(t["testTime"] for t in mine) == [90_000, 95_000, 100_000, 105_000]
    assert all(t["totalSteps"] == 30 for t in mine)


def test_a_test_that_is_not_30_steps_is_refused(app, unique):
    client, token = logged_in(app)
    test = {"email": "sam.test@test.com", "startTime": 1, "stopTime": 2, "totalSteps": 12}
    response = client.post("/api/tests", json=test, headers={"X-CSRF-Token": token})
    assert response.status_code == 400


def test_customer_names_are_rendered_as_text(app, unique):
    client, token = logged_in(app)
    name = "<img src=x onerror=alert(1)>"
    customer = {"customerName": name, "email": f"xss.{unique}@test.com", "phone": "8015551212",
                "birthDay": "1970-01-01"}  # fmt: skip
    client.post("/api/customers", json=customer, headers={"X-CSRF-Token": token})
    html = client.get("/timer").text
    assert "&lt;img src=x onerror=alert(1)&gt;" in html
    assert name not in html
