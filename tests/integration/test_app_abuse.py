"""The STEDI app under abuse, against real Redis and Kafka: bad input of every kind is
refused with a clear 4xx message and stores nothing; a login flood is rate-limited while
the app keeps answering."""

import json
import threading
import time
import uuid
from datetime import date, timedelta

import httpx
import pytest

from tests.app_server import (
    ADMIN_EMAIL,
    ADMIN_PASSWORD,
    AppServer,
    a_customer,
    a_test,
    csrf_of,
    log_in,
    new_user,
)

pytestmark = pytest.mark.integration

ENTITIES = ("Customer", "User", "RapidStepTest")
TOMORROW = (date.today() + timedelta(days=1)).isoformat()


@pytest.fixture(scope="module")
def app(stack, tmp_path_factory):
    server = AppServer({}, tmp_path_factory.mktemp("abuse") / "app.log")
    yield server
    server.stop()


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
    owner = redis_client.hget("CustomerOwner", email).decode()
    before = stored_counts(redis_client, owner)
    headers = {"X-CSRF-Token": token, "Content-Type": "application/json"}
    response = client.post(path, content=body(email), headers=headers)
    assert response.status_code == status
    assert message in response.json()["error"]
    assert stored_counts(redis_client, owner) == before
    assert client.get("/api/simulation").json()["active"] is False


def test_a_body_streamed_past_the_limit_without_a_length_is_cut_off(app, user, redis_client):
    client, token, email = user
    owner = redis_client.hget("CustomerOwner", email).decode()
    before = stored_counts(redis_client, owner)

    def chunks():  # no Content-Length: httpx sends it chunked
        yield b'{"customerName": "'
        for _ in range(64):
            yield b"x" * 1024
        yield b'"}'

    headers = {"X-CSRF-Token": token, "Content-Type": "application/json"}
    response = client.post("/api/customers", content=chunks(), headers=headers)
    assert response.status_code == 413 and "too large" in response.json()["error"]
    assert stored_counts(redis_client, owner) == before


def test_an_api_body_that_is_not_json_is_refused(app, user, redis_client):
    client, token, email = user
    owner = redis_client.hget("CustomerOwner", email).decode()
    before = stored_counts(redis_client, owner)
    response = client.post(
        "/api/customers",
        content=customer_json(),
        headers={"X-CSRF-Token": token, "Content-Type": "text/plain"},
    )
    assert response.status_code == 415 and "application/json" in response.json()["error"]
    assert stored_counts(redis_client, owner) == before


def form_token(client: httpx.Client, path: str) -> str:
    return csrf_of(client.get(path).text)


def test_a_multipart_upload_to_a_form_is_refused(app, user, redis_client):
    client, _, email = user
    owner = redis_client.hget("CustomerOwner", email).decode()
    before = stored_counts(redis_client, owner)
    fields = {**a_customer(), "csrf": form_token(client, "/customers/new")}
    files = {"photo": ("big.bin", b"\0" * 4096, "application/octet-stream")}
    response = client.post("/customers/new", data=fields, files=files)
    assert response.status_code == 415 and "x-www-form-urlencoded" in response.text
    assert stored_counts(redis_client, owner) == before


def test_a_form_with_too_many_fields_is_refused(app, user, redis_client):
    client, _, email = user
    owner = redis_client.hget("CustomerOwner", email).decode()
    before = stored_counts(redis_client, owner)
    fields = {**a_customer(), "csrf": form_token(client, "/customers/new")}
    fields |= {f"extra{i}": "x" for i in range(30)}
    response = client.post("/customers/new", data=fields)
    assert response.status_code == 400 and "Too many fields" in response.text
    assert stored_counts(redis_client, owner) == before


def test_a_customer_form_with_a_future_birthday_is_refused_on_the_page(app, user, redis_client):
    client, _, email = user
    owner = redis_client.hget("CustomerOwner", email).decode()
    before = stored_counts(redis_client, owner)
    fields = {**a_customer(), "birthDay": TOMORROW, "csrf": form_token(client, "/customers/new")}
    response = client.post("/customers/new", data=fields)
    assert response.status_code == 400 and "between 1900-01-01 and today" in response.text
    assert stored_counts(redis_client, owner) == before


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
    client = httpx.Client(base_url=app.url, timeout=10)
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


# --- login flood ----------------------------------------------------------------------------
@pytest.fixture
def fresh_app(stack, tmp_path):
    """An app of its own: the login counters start at zero."""
    server = AppServer({}, tmp_path / "app.log")
    yield server
    server.stop()


class Probe(threading.Thread):
    """Keeps asking /health and the graph (page and live stream) while the flood runs."""

    def __init__(self, app, client: httpx.Client):
        super().__init__(daemon=True)
        self.app, self.client = app, client
        self.answers: list[int] = []
        self.failures: list[str] = []
        self.done = threading.Event()

    def run(self):
        while not self.done.is_set():
            for path in ("/health", "/graph"):
                try:
                    self.answers.append(self.client.get(path, timeout=5).status_code)
                except httpx.HTTPError as exc:
                    self.failures.append(f"{path}: {exc!r}")
            time.sleep(0.05)


def wrong_logins(app, emails: list[str]) -> list[int]:
    client = httpx.Client(base_url=app.url, timeout=30)
    token = form_token(client, "/login")
    codes = []
    for email in emails:
        fields = {"email": email, "password": "not the password", "csrf": token}
        codes.append(client.post("/login", data=fields).status_code)
    return codes


def test_fifty_wrong_logins_get_429_while_health_and_the_graph_keep_answering(fresh_app):
    app = fresh_app
    viewer, _ = log_in(app, ADMIN_EMAIL, ADMIN_PASSWORD)
    probe = Probe(app, viewer)
    with viewer.stream("GET", "/api/risk-stream") as stream:
        assert stream.status_code == 200
        probe.start()
        codes = wrong_logins(app, [ADMIN_EMAIL] * 50)
        probe.done.set()
        probe.join()
    assert codes[0] == 401 and 429 in codes
    first_refusal = codes.index(429)
    assert set(codes[:first_refusal]) == {401} and set(codes[first_refusal:]) == {429}
    assert probe.failures == [] and probe.answers and set(probe.answers) == {200}

    # The right password does not get through either while the account is locked.
    client = httpx.Client(base_url=app.url)
    fields = {"email": ADMIN_EMAIL, "password": ADMIN_PASSWORD,
              "csrf": form_token(client, "/login")}  # fmt: skip
    locked = client.post("/login", data=fields)
    assert locked.status_code == 429 and "Too many failed logins" in locked.text


def test_wrong_logins_over_many_accounts_from_one_client_get_429(fresh_app):
    emails = [f"guess.{i}.{uuid.uuid4().hex[:6]}@test.com" for i in range(50)]
    codes = wrong_logins(fresh_app, emails)
    assert codes[0] == 401 and 429 in codes
    assert set(codes[codes.index(429) :]) == {429}
    assert httpx.get(f"{fresh_app.url}/health", timeout=5).json() == {"status": "up"}
