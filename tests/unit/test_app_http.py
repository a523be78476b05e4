"""The app's HTTP behaviour that needs no live stack, in-process (Starlette's TestClient,
fakeredis, Kafka fakes): logins and sessions, CSRF, 401 and redirects, ownership (404),
413, 415 and every 4xx for bad input, with nothing stored. What needs Kafka, a live
stream or a real outage stays in tests/integration/test_app_*.py."""

import asyncio
import json
import re
import threading
import time
import uuid
from datetime import date, timedelta

import fakeredis
import pytest

from stedi.app.services import Services
from stedi.app.store import Store
from stedi.app.web import create_app
from stedi.config import Settings
from tests.app_in_process import (
    NO_KAFKA,
    QuietFeed,
    QuietQuality,
    SentScores,
    TestClient,
    app_in_process,
)
from tests.app_server import (
    ADMIN_EMAIL,
    ADMIN_PASSWORD,
    a_customer,
    a_test,
    form_token,
    logged_in,
    new_user,
    stored,
)

ENTITIES = ("Customer", "User", "RapidStepTest")
TOMORROW = (date.today() + timedelta(days=1)).isoformat()


@pytest.fixture(scope="module")
def app():
    with app_in_process() as in_process:
        yield in_process


@pytest.fixture
def redis_client(app):
    """The app's own (fake) Redis."""
    return app.redis


@pytest.fixture
def unique():
    return uuid.uuid4().hex[:10]


@pytest.fixture(scope="module")
def user(app):
    """A logged-in user with one customer of their own: (client, CSRF token, customer email)."""
    client, token, _ = new_user(app)
    customer = a_customer("Ona Own")
    response = client.post("/api/customers", json=customer, headers={"X-CSRF-Token": token})
    assert response.status_code == 201
    return client, token, customer["email"]


def stored_counts(redis_client, owner_email: str) -> dict:
    counts = {entity: redis_client.zcard(entity) for entity in ENTITIES}
    counts["CustomerOwner"] = redis_client.hlen("CustomerOwner")
    counts["own customers"] = redis_client.hlen(f"CustomersOf:{owner_email}")
    return counts


def json_of_test(email: str, **changes) -> bytes:
    body = {**a_test(email), **changes}
    return json.dumps(body).encode()


def raw_test(email: str, start: str, stop: str) -> bytes:
    """A test body with literal JSON for the times (NaN, Infinity, 1e999 are not JSON)."""
    return (
        f'{{"email": "{email}", "startTime": {start}, "stopTime": {stop}, "totalSteps": 30}}'
    ).encode()


def customer_json(**changes) -> bytes:
    return json.dumps({**a_customer(), **changes}).encode()


# (kind, path, body(customer email) -> bytes, expected status, words of the message)
API_CASES = [
    ("name too long", "/api/customers", lambda e: customer_json(customerName="x" * 101),
     400, "too long"),
    ("name with a control character", "/api/customers",
     lambda e: customer_json(customerName="Ann\u0000Lee"), 400, "not allowed"),
    ("name with a lone surrogate", "/api/customers",
     lambda e: customer_json().replace(b'"Ann Api"', b'"Ann \\ud800"'), 400, "not allowed"),
    ("name that is not text", "/api/customers", lambda e: customer_json(customerName=["x"]),
     400, "must be text"),
    ("malformed email", "/api/customers", lambda e: customer_json(email="ann-at-test.com"),
     400, "name@example.com"),
    ("email too long", "/api/customers",
     lambda e: customer_json(email="a" * 300 + "@test.com"), 400, "too long"),
    ("phone with letters", "/api/customers", lambda e: customer_json(phone="call me maybe"),
     400, "digits"),
    ("birthday in the future", "/api/customers", lambda e: customer_json(birthDay=TOMORROW),
     400, "between 1900-01-01 and today"),
    ("birthday before 1900", "/api/customers", lambda e: customer_json(birthDay="1899-12-31"),
     400, "between 1900-01-01 and today"),
    ("malformed birthday", "/api/customers", lambda e: customer_json(birthDay="03/02/1960"),
     400, "YYYY-MM-DD"),
    ("body that is a JSON array", "/api/customers", lambda e: b"[1, 2, 3]", 400, "JSON object"),
    ("malformed JSON", "/api/customers", lambda e: b'{"customerName": ', 400, "must be JSON"),
    ("deeply nested JSON", "/api/customers", lambda e: b"[" * 8000 + b"]" * 8000,
     400, "must be JSON"),
    ("NaN test time", "/api/tests", lambda e: raw_test(e, "NaN", "1"), 400, "finite"),
    ("Infinity test time", "/api/tests", lambda e: raw_test(e, "1", "Infinity"), 400, "finite"),
    ("overflowing float test time", "/api/tests", lambda e: raw_test(e, "1", "1e999"),
     400, "finite"),
    ("400-digit test time", "/api/tests", lambda e: raw_test(e, "9" * 400, "9" * 401),
     400, "within the last 7 days"),
    ("test time as a string", "/api/tests",
     lambda e: json_of_test(e, startTime=str(a_test(e)["startTime"])), 400, "whole epoch"),
    ("test time as a boolean", "/api/tests", lambda e: json_of_test(e, stopTime=True),
     400, "whole epoch"),
    ("test from 1970", "/api/tests", lambda e: json_of_test(e, startTime=1000, stopTime=61000),
     400, "within the last 7 days"),
    ("test stopping before it starts", "/api/tests",
     lambda e: json_of_test(e, stopTime=a_test(e)["startTime"] - 1000),
     400, "stop after it starts"),
    ("test lasting two hours", "/api/tests",
     lambda e: json.dumps(a_test(e, duration_ms=7_200_000)).encode(), 400, "1 second and 1 hour"),
    ("test of 12 steps", "/api/tests", lambda e: json_of_test(e, totalSteps=12), 400, "30 steps"),
    ("simulation switch that is not a boolean", "/api/simulation",
     lambda e: b'{"active": "yes"}', 400, "true or false"),
    ("body over the size limit", "/api/customers",
     lambda e: customer_json(customerName="x" * 20_000), 413, "too large"),
]  # fmt: skip


@pytest.mark.parametrize(
    ("path", "body", "status", "message"),
    [case[1:] for case in API_CASES],
    ids=[case[0] for case in API_CASES],
)
def test_bad_api_input_gets_a_clear_4xx_and_stores_nothing(
    app, user, redis_client, path, body, status, message
):
    client, token, email = user
    unchanged = store_check(redis_client, email)
    headers = {"X-CSRF-Token": token, "Content-Type": "application/json"}
    response = client.post(path, content=body(email), headers=headers)
    assert response.status_code == status
    assert message in response.json()["error"]
    assert unchanged()
    assert client.get("/api/simulation").json()["active"] is False


def store_check(redis_client, email: str):
    """A check that the user's stored customers and tests are still what they are now."""
    owner = redis_client.hget("CustomerOwner", email).decode()
    before = stored_counts(redis_client, owner)
    return lambda: stored_counts(redis_client, owner) == before


def test_a_body_streamed_past_the_limit_without_a_length_is_cut_off(app, user, redis_client):
    client, token, email = user
    unchanged = store_check(redis_client, email)

    def chunks():  # no Content-Length: httpx sends it chunked
        yield b'{"customerName": "'
        for _ in range(64):
            yield b"x" * 1024
        yield b'"}'

    headers = {"X-CSRF-Token": token, "Content-Type": "application/json"}
    response = client.post("/api/customers", content=chunks(), headers=headers)
    assert response.status_code == 413 and "too large" in response.json()["error"]
    assert unchanged()


def test_an_api_body_that_is_not_json_is_refused(app, user, redis_client):
    client, token, email = user
    unchanged = store_check(redis_client, email)
    response = client.post(
        "/api/customers",
        content=customer_json(),
        headers={"X-CSRF-Token": token, "Content-Type": "text/plain"},
    )
    assert response.status_code == 415 and "application/json" in response.json()["error"]
    assert unchanged()


def test_a_multipart_upload_to_a_form_is_refused(app, user, redis_client):
    client, _, email = user
    unchanged = store_check(redis_client, email)
    fields = {**a_customer(), "csrf": form_token(client, "/customers/new")}
    files = {"photo": ("big.bin", b"\0" * 4096, "application/octet-stream")}
    response = client.post("/customers/new", data=fields, files=files)
    assert response.status_code == 415 and "x-www-form-urlencoded" in response.text
    assert unchanged()


def test_a_form_with_too_many_fields_is_refused(app, user, redis_client):
    client, _, email = user
    unchanged = store_check(redis_client, email)
    fields = {**a_customer(), "csrf": form_token(client, "/customers/new")}
    fields |= {f"extra{i}": "x" for i in range(30)}
    response = client.post("/customers/new", data=fields)
    assert response.status_code == 400 and "Too many fields" in response.text
    assert unchanged()


def test_a_customer_form_with_a_future_birthday_is_refused_on_the_page(app, user, redis_client):
    client, _, email = user
    unchanged = store_check(redis_client, email)
    fields = {**a_customer(), "birthDay": TOMORROW, "csrf": form_token(client, "/customers/new")}
    response = client.post("/customers/new", data=fields)
    assert response.status_code == 400 and "between 1900-01-01 and today" in response.text
    assert unchanged()


@pytest.mark.parametrize(
    ("changes", "status", "message"),
    [
        ({"userName": "x" * 400_000}, 413, "too large"),
        ({"userName": "x" * 101}, 400, "too long"),
        ({"userName": "Line\nbreak"}, 400, "not allowed"),
        ({"password": "p" * 257}, 400, "8 to 256"),
        ({"password": "short"}, 400, "8 to 256"),
        ({"email": "not-an-email"}, 400, "name@example.com"),
    ],
    ids=[
        "400 KB user name",
        "long user name",
        "user name with a line break",
        "password too long",
        "password too short",
        "malformed email",
    ],
)
def test_bad_sign_ups_get_a_clear_4xx_and_store_nothing(
    app, redis_client, changes, status, message
):
    client = app.client()
    fields = {
        "userName": "Sid",
        "email": f"sid.{uuid.uuid4().hex[:10]}@test.com",
        "password": "long enough pass",
        "csrf": form_token(client, "/signup"),
        **changes,
    }
    users_before = redis_client.zcard("User")
    response = client.post("/signup", data=fields)
    assert response.status_code == status and message in response.text
    assert redis_client.zcard("User") == users_before


# --- sessions, CSRF, ownership (from test_app_api.py) ---------------------------------
def test_health_says_only_up_without_login_and_details_with_one(app):
    assert app.client().get("/health").json() == {"status": "up"}
    client, _ = logged_in(app)
    details = client.get("/health").json()
    assert details["status"] == "up" and details["redis"] is True
    assert isinstance(details["problems"], list)


def test_everything_but_health_login_and_signup_needs_a_login(app):
    assert app.client().get("/api/customers").status_code == 401
    assert app.client().get("/api/risk-stream").status_code == 401
    for path in ("/timer", "/graph", "/customers/new", "/customers/sam.test@test.com"):
        page = app.client().get(path)
        assert page.status_code == 303 and page.headers["location"] == "/login"


def test_a_wrong_password_is_refused(app):
    client = app.client()
    token = form_token(client, "/login")
    response = client.post("/login", data={"email": ADMIN_EMAIL, "password": "nope", "csrf": token})
    assert response.status_code == 401 and "Wrong email or password" in response.text
    assert client.get("/api/customers").status_code == 401


def test_posts_without_the_csrf_token_are_refused(app):
    client, _ = logged_in(app)
    response = client.post("/api/customers", json={"customerName": "X"})
    assert response.status_code == 403
    login = app.client().post("/login", data={"email": ADMIN_EMAIL, "password": ADMIN_PASSWORD})
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


def test_the_timer_page_comes_with_the_simulation_switch_in_its_state(app):
    """A click before timer.js's first refresh sees the real state: unchecking a switch
    drawn unchecked did nothing, and the refresh then turned it back on (a CI failure)."""
    client, token, _ = new_user(app)
    switch = re.compile(r'<input type="checkbox" id="simulation-toggle"( checked)?>')
    state = re.compile(r'<span id="simulation-state">([^<]*)</span>')
    html = client.get("/timer").text
    assert switch.search(html).group(1) is None and state.search(html).group(1) == "off"
    headers = {"X-CSRF-Token": token}
    assert client.post("/api/simulation", json={"active": True}, headers=headers).json()["active"]
    try:
        html = client.get("/timer").text
        assert switch.search(html).group(1) == " checked"
        assert re.fullmatch(r"on, \d+ tests", state.search(html).group(1))
    finally:
        client.post("/api/simulation", json={"active": False}, headers=headers)
    assert state.search(client.get("/timer").text).group(1) == "off"


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
    copied = app.client()
    copied.cookies.set("stedi_session", client.cookies["stedi_session"])
    assert copied.get("/api/customers").status_code == 200
    assert client.post("/logout", data={"csrf": token}).status_code == 303
    assert copied.get("/api/customers").status_code == 401
    page = copied.get("/timer")
    assert page.status_code == 303 and page.headers["location"] == "/login"
    refused = copied.post("/api/customers", json=a_customer(), headers={"X-CSRF-Token": token})
    assert refused.status_code == 401


# --- start and shutdown -----------------------------------------------------------------------
def fake_services(
    redis, publisher=SentScores, feed=QuietFeed, quality=QuietQuality, store=Store
) -> Services:
    """The app's services on a fake Redis and Kafka fakes, of the classes a test gives."""
    return Services(
        redis=redis,
        store=store(redis),
        publisher=publisher("events"),
        feed=feed(NO_KAFKA, "risk"),
        quality=quality(NO_KAFKA, "quality"),
    )


def test_shutdown_closes_every_service_even_when_one_close_fails():
    closed = []

    class FailingFeed(QuietFeed):
        def close(self):
            closed.append("feed")
            raise RuntimeError("the feed failed to close")

    class Quality(QuietQuality):
        def close(self):
            closed.append("quality")

    class Publisher(SentScores):
        def close(self):
            closed.append("publisher")

    class Redis(fakeredis.FakeAsyncRedis):
        async def aclose(self):
            closed.append("redis")

    services = fake_services(Redis(), Publisher, FailingFeed, Quality)
    with pytest.raises(RuntimeError, match="the feed failed to close"):
        with TestClient(create_app(Settings(), services)) as test_client:
            assert test_client.get("/health").json()["status"] in ("starting", "up")
    assert closed == ["feed", "quality", "publisher", "redis"]


def test_health_says_starting_until_the_first_start_has_made_the_admin():
    gate = threading.Event()

    class SlowStore(Store):
        async def ensure_keys(self, *args):
            await asyncio.to_thread(gate.wait, 10)  # the first start, held by the test
            return await super().ensure_keys(*args)

    services = fake_services(fakeredis.FakeAsyncRedis(), store=SlowStore)
    with TestClient(create_app(Settings(), services)) as test_client:
        starting = test_client.get("/health")
        assert starting.status_code == 503 and starting.json() == {"status": "starting"}
        gate.set()
        deadline = time.monotonic() + 10
        while (health := test_client.get("/health")).status_code != 200:
            assert time.monotonic() < deadline, health.json()
            time.sleep(0.05)
        assert health.json() == {"status": "up"}
