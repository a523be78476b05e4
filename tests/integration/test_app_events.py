"""What the real app publishes on stedi-events, against the real Kafka and Redis."""

import json
import math
import re
import time
from datetime import datetime, timezone

import pytest

from tests.app_server import AppServer, logged_in, stored
from tests.stack_support import TopicReader, create_topics

pytestmark = pytest.mark.integration

RISK_DATE = re.compile(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z")
ROUNDS_OF_SCORES = 2  # rounds after the first three, which give no score yet


def iso_millis(epoch_ms: int) -> str:
    moment = datetime.fromtimestamp(epoch_ms / 1000, timezone.utc)
    return moment.isoformat(timespec="milliseconds").replace("+00:00", "Z")


@pytest.fixture
def simulated_events(stack, unique, redis_client, tmp_path):
    """Records of the app's simulator at 30x on a fresh topic, and the customers' tests."""
    topic = f"stedi-events-sim-{unique}"
    create_topics(stack, topic)
    reader = TopicReader(stack, topic)
    env = {"STEDI_EVENTS_TOPIC": topic, "STEDI_SIMULATE": "1", "STEDI_SIM_SPEED": "30"}
    app = AppServer(env, tmp_path / "app.log")
    try:
        records = reader.read(lambda rs: len(rs) >= 30 * ROUNDS_OF_SCORES, timeout=120)
    finally:
        app.stop()
        reader.close()
    assert len(records) >= 30 * ROUNDS_OF_SCORES, (tmp_path / "app.log").read_text()[-3000:]
    emails = {json.loads(r.value)["customer"] for r in records}
    customers = {
        c["email"]: c for c in stored(redis_client, "Customer") if c.get("email") in emails
    }
    tests: dict[str, list[dict]] = {}
    for test in stored(redis_client, "RapidStepTest"):
        email = test.get("customer", {}).get("email")
        if email in emails:
            tests.setdefault(email, []).append(test)
    return records, customers, tests


def test_simulated_events_are_the_spec_record_dated_by_the_latest_test(simulated_events):
    records, customers, tests = simulated_events
    dates: dict[str, list[str]] = {}
    for record in records:
        assert record.key.decode().isdigit()  # the publish time in epoch ms
        value = json.loads(record.value)
        assert set(value) == {"customer", "score", "riskDate"}
        assert isinstance(value["score"], float) and RISK_DATE.fullmatch(value["riskDate"])
        assert math.copysign(1, value["score"]) == 1.0 or value["score"] < 0  # never -0.0
        dates.setdefault(value["customer"], []).append(value["riskDate"])
    assert set(dates) <= set(customers)
    for email, published in dates.items():
        stops = sorted(t["stopTime"] for t in tests[email])
        # the n-th score is dated by the stop time of the customer's (n+3)-th test
        assert published == [iso_millis(s) for s in stops[3:]][: len(published)], email


def test_the_1950_to_1960_cohort_scores_zero_or_below_in_steps_of_half_a_second(
    simulated_events,
):
    records, customers, tests = simulated_events
    cohort = 0
    for record in records:
        value = json.loads(record.value)
        if not 1950 <= int(customers[value["customer"]]["birthDay"][:4]) <= 1960:
            continue
        cohort += 1
        score = value["score"]
        assert score <= 0 and (score * 2).is_integer(), value
        assert not re.search(rb'"score":-0\.0[,}]', record.value), record.value
        # previous two minus recent two, by stop time; whole seconds make it exact
        history = sorted(tests[value["customer"]], key=lambda t: t["stopTime"])
        upto = [t for t in history if iso_millis(t["stopTime"]) <= value["riskDate"]]
        a, b, c, d = (t["testTime"] for t in upto[-4:])
        assert score == (a + b - c - d) / 2000, value
    assert cohort >= 11 * ROUNDS_OF_SCORES  # 11 of the 30 customers are born 1950-1960


def test_kafka_broker_alone_points_the_app_at_that_broker(stack, unique, tmp_path):
    """The original app's variable: KAFKA_BROKER=host:port, KAFKA_BOOTSTRAP_SERVERS unset."""
    topic = f"stedi-events-broker-{unique}"
    create_topics(stack, topic)
    port = stack.kafka_bootstrap_servers.rsplit(":", 1)[1]
    broker = f"127.0.0.1:{port}"  # not the default's spelling (localhost:9092)
    env = {"KAFKA_BOOTSTRAP_SERVERS": None, "KAFKA_BROKER": broker, "STEDI_EVENTS_TOPIC": topic}
    app = AppServer(env, tmp_path / "app.log")
    reader = TopicReader(stack, topic)
    start = int(time.time() * 1000) - 3_600_000  # tests of the last hour
    try:
        assert f"Kafka at {broker}" in (tmp_path / "app.log").read_text()
        client, token = logged_in(app)
        headers = {"X-CSRF-Token": token}
        email = f"broker.{unique}@test.com"
        customer = {"customerName": "Bo Broker", "email": email, "phone": "8015551212",
                    "birthDay": "1970-01-01"}  # fmt: skip
        assert client.post("/api/customers", json=customer, headers=headers).status_code == 201
        for i in range(4):
            test = {"email": email, "startTime": start + i * 600_000,
                    "stopTime": start + i * 600_000 + 70_000, "totalSteps": 30}  # fmt: skip
            assert client.post("/api/tests", json=test, headers=headers).status_code == 201
        records = reader.read(lambda rs: rs)
    finally:
        reader.close()
        app.stop()
    assert [json.loads(r.value) for r in records] == [
        {"customer": email, "score": 0.0, "riskDate": iso_millis(start + 3 * 600_000 + 70_000)}
    ]
