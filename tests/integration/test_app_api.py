"""The STEDI app's HTTP API against real Redis and Kafka: sessions, ownership, data."""

import json
import time
import uuid

import httpx
import pytest

from stedi.app.risk import iso_millis
from tests.app_server import (
    ADMIN_EMAIL,
    ADMIN_PASSWORD,
    AppServer,
    a_customer,
    a_test,
    csrf_of,
    logged_in,
    new_user,
    stored,
)
from tests.stack_support import TopicReader, create_topics

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def app(stack, tmp_path_factory):
    events_topic = f"stedi-events-app-{uuid.uuid4().hex[:8]}"
    create_topics(stack, events_topic)
    log = tmp_path_factory.mktemp("app") / "app.log"
    server = AppServer({"STEDI_EVENTS_TOPIC": events_topic}, log)
    server.events_topic = events_topic
    yield server
    server.stop()


def test_health_says_only_up_without_login_and_details_with_one(app):
    assert httpx.get(f"{app.url}/health").json() == {"status": "up"}
    client, _ = logged_in(app)
    details = client.get("/health").json()
    assert details["status"] == "up" and details["redis"] is True
    assert isinstance(details["problems"], list)


def test_everything_but_health_login_and_signup_needs_a_login(app):
    assert httpx.get(f"{app.url}/api/customers").status_code == 401
    assert httpx.get(f"{app.url}/api/risk-stream").status_code == 401
    for path in ("/timer", "/graph", "/customers/new", "/customers/sam.test@test.com"):
        page = httpx.get(f"{app.url}{path}")
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
    customer = a_customer()
    assert client.post("/api/customers", json=customer, headers=headers).status_code == 201
    assert customer in stored(redis_client, "Customer")
    before = redis_client.zcard("Customer")
    bad = {**a_customer(), "birthDay": "03/02/1960"}
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
    # Stops 10 minutes apart in the last hour; the newest test arrives before the third
    # (a late upload).
    first_stop = (int(time.time() * 1000) // 1000 - 3600) * 1000
    durations = {0: 100_000, 1: 90_000, 3: 105_000, 2: 95_000}
    for slot, duration in durations.items():
        stop = first_stop + slot * 600_000
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
        "riskDate": iso_millis(first_stop + 3 * 600_000),  # the stop time of the newest test
    }
    assert record.key.decode().isdigit()
    tests = stored(redis_client, "RapidStepTest")
    mine = [t for t in tests if t["customer"]["email"] == email]
    assert sorted(t["testTime"] for t in mine) == [90_000, 95_000, 100_000, 105_000]
    assert all(t["totalSteps"] == 30 for t in mine)


def test_a_test_that_is_not_30_steps_is_refused(app, redis_client):
    client, token = logged_in(app)
    headers = {"X-CSRF-Token": token}
    customer = a_customer()
    client.post("/api/customers", json=customer, headers=headers)
    before = redis_client.zcard("RapidStepTest")
    test = {**a_test(customer["email"]), "totalSteps": 12}
    response = client.post("/api/tests", json=test, headers=headers)
    assert response.status_code == 400 and "exactly 30 steps" in response.json()["error"]
    assert redis_client.zcard("RapidStepTest") == before


def test_customer_names_are_rendered_as_text(app, unique):
    client, token = logged_in(app)
    name = "<img src=x onerror=alert(1)>"
    customer = {"customerName": name, "email": f"xss.{unique}@test.com", "phone": "8015551212",
                "birthDay": "1970-01-01"}  # fmt: skip
    client.post("/api/customers", json=customer, headers={"X-CSRF-Token": token})
    html = client.get("/timer").text
    assert "&lt;img src=x onerror=alert(1)&gt;" in html
    assert name not in html


def test_another_user_gets_404_for_my_customers_and_their_tests_in_api_and_pages(app, redis_client):
    owner, owner_token, owner_email = new_user(app)
    other, other_token, _ = new_user(app)
    customer = a_customer("Alma Owned")
    email = customer["email"]
    headers = {"X-CSRF-Token": owner_token}
    assert owner.post("/api/customers", json=customer, headers=headers).status_code == 201
    assert owner.post("/api/tests", json=a_test(email), headers=headers).status_code == 201

    mine = owner.get(f"/api/customers/{email}").json()
    assert mine["customer"] == customer and [t["testTime"] for t in mine["tests"]] == [60_000]
    assert owner.get("/api/customers").json() == [customer]
    assert "Alma Owned" in owner.get("/timer").text
    assert "60.0" in owner.get(f"/customers/{email}").text

    assert other.get("/api/customers").json() == []
    assert other.get(f"/api/customers/{email}").status_code == 404
    page = other.get(f"/customers/{email}")
    assert page.status_code == 404 and "Alma Owned" not in page.text
    assert "No such customer" in page.text
    assert "Alma Owned" not in other.get("/timer").text
    tests_before = redis_client.zcard("RapidStepTest")
    refused = other.post("/api/tests", json=a_test(email), headers={"X-CSRF-Token": other_token})
    assert refused.status_code == 404 and "No such customer" in refused.json()["error"]
    assert redis_client.zcard("RapidStepTest") == tests_before
    # The email stays the owner's: a copy under the other account is refused.
    taken = other.post("/api/customers", json={**customer, "customerName": "Thief"},
                       headers={"X-CSRF-Token": other_token})  # fmt: skip
    assert taken.status_code == 400 and "already exists" in taken.json()["error"]
    assert redis_client.hget("CustomerOwner", email).decode() == owner_email
    assert owner.get("/api/customers").json() == [customer]


def test_after_logout_the_old_cookie_is_refused(app):
    client, token, _ = new_user(app)
    copied = httpx.Client(
        base_url=app.url, cookies={"stedi_session": client.cookies["stedi_session"]}
    )
    assert copied.get("/api/customers").status_code == 200
    assert client.post("/logout", data={"csrf": token}).status_code == 303
    assert copied.get("/api/customers").status_code == 401
    page = copied.get("/timer")
    assert page.status_code == 303 and page.headers["location"] == "/login"
    refused = copied.post("/api/customers", json=a_customer(), headers={"X-CSRF-Token": token})
    assert refused.status_code == 401


def test_the_live_graph_stream_ends_when_its_session_logs_out(app):
    client, token, _ = new_user(app)
    seen = []
    with client.stream("GET", "/api/risk-stream") as stream:
        assert stream.status_code == 200
        lines = stream.iter_lines()
        while "event: round" not in seen:
            seen.append(next(lines))
        assert client.post("/logout", data={"csrf": token}).status_code == 303
        try:
            seen += list(lines)  # returns once the server ends the stream
        except httpx.ReadTimeout:
            pytest.fail("the stream outlived its session")
    assert not any(line.startswith("event: point") for line in seen)
    assert client.get("/api/risk-stream").status_code == 401


def test_customers_stored_before_owners_existed_go_to_the_admin_and_keep_their_email(
    stack, redis_client, tmp_path
):
    legacy = a_customer("Lena Legacy", born="1955-05-05")
    redis_client.zadd("Customer", {json.dumps(legacy, separators=(",", ":")): 0})
    server = AppServer({}, tmp_path / "app.log")
    try:
        assert redis_client.hget("CustomerOwner", legacy["email"]).decode() == ADMIN_EMAIL
        client, _ = logged_in(server)
        emails = [c["email"] for c in client.get("/api/customers").json()]
        assert legacy["email"] in emails
    finally:
        server.stop()
