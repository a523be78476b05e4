"""sparkpyriskscore.py against the real app: the simulator at 30x, real Kafka, spark-submit.

The app publishes its scores on a fresh events topic; the Redis source publishes
the tests on the stack's `redis-server`, which Spark reads from where it stood
before the app started (the simulator's customers are new, so that is their
whole history).
"""

from __future__ import annotations

import json
import time
import uuid
from collections import Counter

import pytest
from kafka import KafkaConsumer, TopicPartition

from tests.app_server import AppServer, logged_in
from tests.stack_support import TopicReader, create_topics, read_all, submit

pytestmark = pytest.mark.integration

MIN_SCORES = 100


def end_offset(settings, topic: str) -> int:
    consumer = KafkaConsumer(bootstrap_servers=settings.kafka_bootstrap_servers)
    try:
        tp = TopicPartition(topic, 0)
        return consumer.end_offsets([tp])[tp]
    finally:
        consumer.close()


def wait_until_quiet(settings, topic: str, quiet_s: float = 3.0, timeout: float = 60.0) -> None:
    """Returns once the topic's end offset has not moved for `quiet_s`."""
    deadline, last, since = time.monotonic() + timeout, -1, time.monotonic()
    while time.monotonic() < deadline:
        offset = end_offset(settings, topic)
        if offset != last:
            last, since = offset, time.monotonic()
        elif time.monotonic() - since >= quiet_s:
            return
        time.sleep(0.5)
    raise AssertionError(f"{topic} still grows after {timeout} s")


@pytest.fixture(scope="module")
def simulated_run(stack, tmp_path_factory):
    """The app's scores of one simulator run at 30x, the topics the jobs use, and the
    starting offsets of the score job (the stack's `redis-server` from the run's start)."""
    unique, tmp_path = uuid.uuid4().hex[:10], tmp_path_factory.mktemp("risk-score")
    topics = {
        "STEDI_EVENTS_TOPIC": f"stedi-events-{unique}",
        "STEDI_SPARK_RISK_TOPIC": f"stedi-risk-spark-{unique}",
        "STEDI_RISK_QUALITY_TOPIC": f"risk-quality-{unique}",
        "STEDI_DEAD_LETTER_TOPIC": f"dead-letter-{unique}",
    }
    create_topics(stack, *topics.values())
    redis_start = end_offset(stack, stack.redis_topic)
    reader = TopicReader(stack, topics["STEDI_EVENTS_TOPIC"])
    env = {
        "STEDI_EVENTS_TOPIC": topics["STEDI_EVENTS_TOPIC"],
        "STEDI_SIMULATE": "1",
        "STEDI_SIM_SPEED": "30",
    }
    app = AppServer(env, tmp_path / "app.log")
    try:
        records = reader.read(lambda rs: len(rs) >= MIN_SCORES + 20, timeout=240)
    finally:
        app.stop()
        reader.close()
    assert len(records) >= MIN_SCORES + 20, (tmp_path / "app.log").read_text()[-3000:]
    # every test the app stored has reached `redis-server` before Spark reads it
    wait_until_quiet(stack, stack.redis_topic)
    app_scores = read_all(stack, topics["STEDI_EVENTS_TOPIC"], len(records) + 1000, timeout=10)
    offsets = {stack.redis_topic: {"0": redis_start}, topics["STEDI_EVENTS_TOPIC"]: {"0": -2}}
    jobs_env = {
        **topics,
        "STEDI_CHECKPOINT_DIR": str(tmp_path / "score-checkpoints"),
        "STEDI_STARTING_OFFSETS": json.dumps(offsets),
    }
    output = submit("submit-score.sh", jobs_env)
    scores = [json.loads(r.value) for r in app_scores]
    return topics, scores, output, tmp_path, jobs_env["STEDI_STARTING_OFFSETS"]


def test_spark_scores_agree_with_every_app_score(stack, simulated_run):
    topics, app_scores, output, _, _ = simulated_run
    spark_scores = [
        json.loads(r.value)
        for r in read_all(stack, topics["STEDI_SPARK_RISK_TOPIC"], len(app_scores), timeout=30)
    ]
    checks = [
        json.loads(r.value)
        for r in read_all(stack, topics["STEDI_RISK_QUALITY_TOPIC"], len(app_scores), timeout=30)
    ]
    assert len(spark_scores) >= MIN_SCORES, output[-3000:]
    assert Counter(json.dumps(s, sort_keys=True) for s in spark_scores) == Counter(
        json.dumps(s, sort_keys=True) for s in app_scores
    )
    assert len(checks) == len(spark_scores)
    assert all(c["agree"] is True and c["sparkScore"] == c["appScore"] for c in checks)
    assert {(c["customer"], c["riskDate"]) for c in checks} == {
        (s["customer"], s["riskDate"]) for s in app_scores
    }
    last = [line for line in output.splitlines() if line.startswith("[risk-score] batch ")]
    assert last and "agreement 100.0% of " in last[-1], output[-3000:]


def test_the_join_fed_from_spark_scores_writes_the_same_records(stack, unique, simulated_run):
    topics, app_scores, _, tmp_path, offsets = simulated_run
    outputs = {}
    for source in ("STEDI_EVENTS_TOPIC", "STEDI_SPARK_RISK_TOPIC"):
        name = source.lower().replace("_", "-")
        risk_topic = f"customer-risk-{name}-{unique}"
        create_topics(stack, risk_topic)
        submit(
            "submit-join.sh",
            {
                "STEDI_EVENTS_TOPIC": topics[source],
                "KAFKA_RISK_TOPIC": risk_topic,
                "STEDI_DEAD_LETTER_TOPIC": topics["STEDI_DEAD_LETTER_TOPIC"],
                "STEDI_CHECKPOINT_DIR": str(tmp_path / f"join-{name}"),
                # Names `redis-server` and the events topic, not the Spark scores' topic:
                # each of the join's two sources takes its own part, or earliest.
                "STEDI_STARTING_OFFSETS": offsets,
            },
        )
        records = read_all(stack, risk_topic, len(app_scores), timeout=30)
        outputs[source] = Counter((r.key, r.value) for r in records)
    assert sum(outputs["STEDI_EVENTS_TOPIC"].values()) >= MIN_SCORES
    assert outputs["STEDI_SPARK_RISK_TOPIC"] == outputs["STEDI_EVENTS_TOPIC"]


def test_the_graph_page_says_how_many_scores_were_checked_and_agreed(
    stack, simulated_run, tmp_path
):
    topics, app_scores, _, _, _ = simulated_run
    env = {"STEDI_RISK_QUALITY_TOPIC": topics["STEDI_RISK_QUALITY_TOPIC"]}
    app = AppServer(env, tmp_path / "app.log")
    try:
        client, _ = logged_in(app)
        expected = f"scores checked: {len(app_scores)}, agreeing: {len(app_scores)}"
        deadline, page = time.monotonic() + 30, ""
        while expected not in page and time.monotonic() < deadline:
            page = client.get("/graph").text
            time.sleep(0.5)
        assert expected in page
    finally:
        app.stop()
