"""The STEDI app's HTTP API against real Redis and Kafka: sessions, ownership, data."""

import json
import time
import uuid

import httpx
import pytest

from stedi.app.risk import iso_millis
from tests.app_server import (
    ADMIN_EMAIL,
    AppServer,
    a_customer,
    index_pass_done,
    logged_in,
    new_user,
    stored,
)
from tests.stack_support import TopicReader

pytestmark = pytest.mark.integration


APP_ENV = {"STEDI_EVENTS_TOPIC": f"stedi-events-app-{uuid.uuid4().hex[:8]}"}


def test_the_fourth_test_publishes_the_risk_score_to_stedi_events(app, stack, unique, redis_client):
    client, token = logged_in(app)
    headers = {"X-CSRF-Token": token}
    email = f"risk.{unique}@test.com"
    customer = {"customerName": "Rita Risk", "email": email, "phone": "8015551212",
                "birthDay": "1955-01-01"}  # fmt: skip
    client.post("/api/customers", json=customer, headers=headers)
    reader = TopicReader(stack, app.env["STEDI_EVENTS_TOPIC"])
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
        index_pass_done(redis_client)  # it adopts them, in the background
        assert redis_client.hget("CustomerOwner", legacy["email"]).decode() == ADMIN_EMAIL
        client, _ = logged_in(server)
        emails = [c["email"] for c in client.get("/api/customers").json()]
        assert legacy["email"] in emails
    finally:
        server.stop()
