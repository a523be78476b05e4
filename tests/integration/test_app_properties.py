"""Properties of the app's form and JSON handlers, over HTTP against real Redis and Kafka:
whatever arrives, the answer is never a 500, and only valid data is ever stored."""

import json
import time
from datetime import date, timedelta

import httpx
import pytest
import redis
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from stedi.app import validation
from stedi.app.limits import MAX_BODY_BYTES
from stedi.app.risk import iso_millis
from tests.app_server import a_customer, csrf_of, forget_owner, new_user

pytestmark = pytest.mark.integration

EXAMPLES = settings(
    max_examples=60,
    deadline=None,
    database=None,  # nothing written into the work tree
    suppress_health_check=[HealthCheck.too_slow],
)
CUSTOMER_FIELDS = ("customerName", "email", "phone", "birthDay")
TEST_FIELDS = ("email", "startTime", "stopTime", "totalSteps")

# Any JSON value, including the ones Python's json writes although JSON has no such thing.
json_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers()
    | st.integers(min_value=-(10**400), max_value=10**400)
    | st.floats()
    | st.text(max_size=300)
    | st.sampled_from(["\ud800", "Ann \udfff", "\x00", "x" * 5000]),  # lone surrogates too
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=12), children, max_size=4)
    ),
    max_leaves=12,
)
now_ms = int(time.time() * 1000)
plausible_times = st.integers(min_value=now_ms - 8 * 86_400_000, max_value=now_ms + 3_600_000)
times = plausible_times | json_values


@pytest.fixture(scope="module")
def redis_db(stack):
    """One client for the module (Hypothesis wants no function-scoped fixtures)."""
    client = redis.Redis(host=stack.redis_host, port=stack.redis_port)
    yield client
    client.close()


@pytest.fixture(scope="module")
def user(app, redis_db):
    client, token, email = new_user(app)
    customer = a_customer("Pia Prop")
    response = client.post("/api/customers", json=customer, headers={"X-CSRF-Token": token})
    assert response.status_code == 201
    yield client, token, email, customer["email"]
    forget_owner(redis_db, email)  # the simulation's customers too


def own_customers(redis_db, owner: str) -> dict[str, dict]:
    raw = redis_db.hgetall(f"CustomersOf:{owner}")
    return {k.decode(): json.loads(v) for k, v in raw.items()}


def assert_all_valid(customers: dict[str, dict]) -> None:
    for email, customer in customers.items():
        assert (
            validation.customer(customer, date.today()) == customer and email == customer["email"]
        )


def post_json(client, token, path: str, raw: bytes) -> httpx.Response:
    headers = {"X-CSRF-Token": token, "Content-Type": "application/json"}
    return client.post(path, content=raw, headers=headers)


# Values near the limits, so that some bodies are valid and stored.
plausible = {
    "customerName": st.text(st.characters(categories=("L", "N", "P", "Zs")), max_size=110),
    "email": st.emails(),
    "phone": st.from_regex(r"[0-9+\-() ]{5,22}", fullmatch=True),
    "birthDay": st.dates(date(1890, 1, 1), date.today() + timedelta(days=60)).map(date.isoformat),
}


def customer_bodies():
    fields = st.fixed_dictionaries(
        {},
        optional={name: json_values | plausible[name] for name in CUSTOMER_FIELDS},
    )
    return st.fixed_dictionaries(plausible) | fields | json_values


@EXAMPLES
@given(body=customer_bodies())
def test_customer_api_never_fails_and_stores_only_valid_customers(app, user, redis_db, body):
    client, token, owner, _ = user
    before = own_customers(redis_db, owner)
    zcard = redis_db.zcard("Customer")
    response = post_json(client, token, "/api/customers", json.dumps(body).encode())
    assert response.status_code < 500
    event(f"HTTP {response.status_code}")  # --hypothesis-show-statistics: how many got stored
    after = own_customers(redis_db, owner)
    if response.status_code == 201:
        assert len(after) == len(before) + 1 and response.json() in after.values()
    else:
        assert 400 <= response.status_code < 500 and response.json()["error"]
        assert after == before and redis_db.zcard("Customer") == zcard
    assert_all_valid(after)


@EXAMPLES
@given(raw=st.binary(max_size=400))
def test_any_bytes_as_a_json_body_are_refused_cleanly(app, user, redis_db, raw):
    client, token, owner, _ = user
    before = own_customers(redis_db, owner)
    response = post_json(client, token, "/api/customers", raw)
    assert response.status_code < 500
    event(f"HTTP {response.status_code}")  # --hypothesis-show-statistics: how many got stored
    if response.status_code != 201:
        assert own_customers(redis_db, owner) == before
    assert_all_valid(own_customers(redis_db, owner))


def timed_test(start: int, duration: int) -> dict:
    return {"startTime": start, "stopTime": start + duration, "totalSteps": 30}


test_bodies = st.builds(timed_test, plausible_times, st.integers(-5000, 4_000_000)) | (
    st.fixed_dictionaries(
        {},
        optional={"startTime": times, "stopTime": times, "totalSteps": st.just(30) | json_values,
                  "email": json_values},
    )
)  # fmt: skip


def customer_tests(client, email: str) -> list[tuple]:
    """(start, stop, duration) of every test on the customer's pages."""
    found, page, pages = [], 1, 1
    while page <= pages:
        view = client.get(f"/api/customers/{email}?page={page}").json()
        found += [(t["startTime"], t["stopTime"], t["testTime"]) for t in view["tests"]]
        page, pages = page + 1, view["pages"]
    return found


@EXAMPLES
@given(body=test_bodies)
def test_test_api_never_fails_and_stores_only_plausible_tests(app, user, redis_db, body):
    client, token, _, customer_email = user
    body.setdefault("email", customer_email)
    before = redis_db.zcard("RapidStepTest")
    response = post_json(client, token, "/api/tests", json.dumps(body).encode())
    assert response.status_code < 500
    event(f"HTTP {response.status_code}")  # --hypothesis-show-statistics: how many got stored
    if response.status_code == 201:
        test = response.json()["test"]
        now = int(time.time() * 1000)
        assert validation.test_times(test, now) == (test["startTime"], test["stopTime"])
        assert test["customer"]["email"] == customer_email
        assert redis_db.zcard("RapidStepTest") == before + 1
        shown = (iso_millis(test["startTime"]), iso_millis(test["stopTime"]), test["testTime"])
        assert shown in customer_tests(client, customer_email)
    else:
        assert response.json()["error"]
        assert redis_db.zcard("RapidStepTest") == before


@settings(EXAMPLES, max_examples=20)  # each `true` creates 30 customers
@given(body=json_values)
def test_simulation_switch_takes_only_a_boolean(app, user, body):
    client, token, _, _ = user
    raw = json.dumps({"active": body}).encode()
    response = post_json(client, token, "/api/simulation", raw)
    if body is True or body is False:
        assert response.status_code == 200 and response.json()["active"] is body
    else:  # a body over the limit is refused before it is read
        expected = 413 if len(raw) > MAX_BODY_BYTES else 400
        assert response.status_code == expected and response.json()["error"]
    post_json(client, token, "/api/simulation", b'{"active": false}')
    assert client.get("/api/simulation").json()["active"] is False


# Forms travel as UTF-8: any text but lone surrogates (which UTF-8 cannot carry).
form_text = st.text(st.characters(exclude_categories=["Cs"]), max_size=300)


@EXAMPLES
@given(
    fields=st.fixed_dictionaries(plausible)
    | st.dictionaries(st.sampled_from(CUSTOMER_FIELDS) | st.text(max_size=8), form_text, max_size=8)
)
def test_customer_form_never_fails_and_stores_only_valid_customers(app, user, redis_db, fields):
    client, _, owner, _ = user
    before = own_customers(redis_db, owner)
    token = csrf_of(client.get("/customers/new").text)
    response = client.post("/customers/new", data={**fields, "csrf": token})
    assert response.status_code < 500
    event(f"HTTP {response.status_code}")  # --hypothesis-show-statistics: how many got stored
    after = own_customers(redis_db, owner)
    if response.status_code == 200:
        assert len(after) == len(before) + 1
    else:
        assert 400 <= response.status_code < 500 and 'class="error"' in response.text
        assert after == before
    assert_all_valid(after)


@EXAMPLES
@given(
    fields=st.fixed_dictionaries(
        {
            "userName": plausible["customerName"],
            "email": st.emails(),
            "password": st.text(min_size=6, max_size=260),
        }
    )
    | st.dictionaries(st.sampled_from(("userName", "email", "password")), form_text, max_size=3)
)
def test_sign_up_never_fails_and_stores_only_valid_users(app, redis_db, fields):
    client = httpx.Client(base_url=app.url, timeout=10)
    token = csrf_of(client.get("/signup").text)
    before = redis_db.zcard("User")
    email = fields.get("email", "").strip()
    taken = bool(redis_db.hexists("UserEmail", email))  # (Hypothesis repeats examples)
    response = client.post("/signup", data={**fields, "csrf": token})
    assert response.status_code < 500
    event(f"HTTP {response.status_code}")  # --hypothesis-show-statistics: how many got stored
    if response.status_code == 303 and taken:  # the same answer, and nothing stored
        assert redis_db.zcard("User") == before
    elif response.status_code == 303:
        assert redis_db.zcard("User") == before + 1
        [stored] = [
            u for raw in redis_db.zrange("User", 0, -1)
            if (u := json.loads(raw)).get("email") == email
        ]  # fmt: skip
        assert validation.signup({**stored, "password": fields["password"]}) == (
            stored["userName"], email, fields["password"])  # fmt: skip
        assert stored["passwordHash"].startswith("$argon2id$")
    else:
        assert response.status_code == 400 and redis_db.zcard("User") == before
