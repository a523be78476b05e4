"""Sign-ups, quotas and the app's private keys, over HTTP against real Redis and Kafka:
a sign-up answers alike whether or not the email is taken, one email signs up once
however many try at once, sign-ups are rate limited, a user's customers have a quota,
and sessions stay out of the replicated `redis-server` topic."""

import base64
import json
import uuid

import httpx
import pytest

from tests.app_server import a_customer, csrf_of, forget_owner, log_in, stored
from tests.integration.test_app_races import PASSWORD, all_at_once, an_email, sign_up
from tests.stack_support import TopicReader

pytestmark = pytest.mark.integration

SIGNUPS, QUOTA = 12, 3
# The environment of the module's `app` (tests/integration/conftest.py).
APP_ENV = {"STEDI_CUSTOMERS_PER_USER": str(QUOTA)}


@pytest.fixture
def signup_app(stack, start_app):
    """An app of its own: its sign-up counter starts at zero."""
    return start_app({"STEDI_SIGNUPS_PER_CLIENT": str(SIGNUPS)})


def users_named(redis_client, email: str) -> list[dict]:
    return [u for u in stored(redis_client, "User") if u.get("email") == email]


def test_sign_ups_answer_alike_store_one_user_per_email_and_are_rate_limited(
    signup_app, redis_client
):
    app = signup_app
    email = an_email("twice")
    forms = []

    def prepare(i):
        client = httpx.Client(base_url=app.url, timeout=30)
        forms.append(client)
        return client

    # 8 sign-ups of one email at the same moment, and one of a fresh email: one answer.
    answers = all_at_once(8, prepare, lambda client: sign_up(app, email, client))
    answers.append(sign_up(app, an_email("fresh")))
    seen = {(a.status_code, a.headers.get("location"), a.text) for a in answers}
    assert seen == {(303, "/login?created=1", "")}
    [user] = users_named(redis_client, email)
    assert user["passwordHash"].startswith("$argon2id$")
    assert log_in(app, email, PASSWORD)  # the one account works

    # Beyond the limit per client address: 429 with a message, nothing stored.
    codes = [sign_up(app, an_email("many")).status_code for _ in range(SIGNUPS)]
    assert codes.count(429) == len(codes) - (SIGNUPS - 9)
    refused = sign_up(app, an_email("late"))
    assert refused.status_code == 429 and "Too many sign-ups" in refused.text


def test_a_users_customers_have_a_quota_with_a_clear_403(app, redis_client):
    email = an_email("quota")
    try:
        assert sign_up(app, email).status_code == 303
        client, token = log_in(app, email, PASSWORD)
        headers = {"X-CSRF-Token": token}
        for _ in range(QUOTA):
            response = client.post("/api/customers", json=a_customer(), headers=headers)
            assert response.status_code == 201
        before = redis_client.zcard("Customer")
        over = client.post("/api/customers", json=a_customer(), headers=headers)
        assert over.status_code == 403
        assert (
            over.json()["error"]
            == f"You have {QUOTA} customers; one user may have at most {QUOTA}."
        )
        form = {**a_customer(), "csrf": csrf_of(client.get("/customers/new").text)}
        page = client.post("/customers/new", data=form)
        assert page.status_code == 403 and "one user may have at most" in page.text
        simulation = client.post("/api/simulation", json={"active": True}, headers=headers)
        assert simulation.status_code == 403 and "at most" in simulation.json()["error"]
        assert client.get("/api/simulation").json()["active"] is False
        assert redis_client.zcard("Customer") == before
        assert len(client.get("/api/customers").json()) == QUOTA
    finally:
        forget_owner(redis_client, email)


def test_login_sessions_stay_out_of_the_replicated_topic(app, stack, redis_client):
    """The Redis source publishes ZADD and SET only; the app's own keys are hashes."""
    reader = TopicReader(stack, stack.redis_topic)
    email = an_email("private")
    try:
        assert sign_up(app, email).status_code == 303
        client, token = log_in(app, email, PASSWORD)
        marker = a_customer(f"Mark {uuid.uuid4().hex[:6]}")
        response = client.post("/api/customers", json=marker, headers={"X-CSRF-Token": token})
        assert response.status_code == 201

        def key(record) -> bytes:
            return base64.b64decode(json.loads(record.value)["key"])

        def members(record) -> list[bytes]:
            entries = json.loads(record.value).get("zsetEntries", [])
            return [base64.b64decode(e["element"]) for e in entries]

        # Written after the login: once the customer's record is there, so is anything
        # the login wrote to a published key.
        records = reader.read(
            lambda rs: any(marker["email"].encode() in m for r in rs for m in members(r)),
            timeout=60,
        )
    finally:
        reader.close()
        forget_owner(redis_client, email)
    keys = {key(r) for r in records}
    assert b"Customer" in keys and b"User" in keys  # the course's keys, as they were
    assert not any(k.startswith((b"Login", b"Session")) for k in keys), keys
    assert not any(email.encode() in r.value for r in records if key(r) != b"User")
