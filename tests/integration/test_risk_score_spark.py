"""sparkpyriskscore.py through `make run`: the simulator at 30x, real Kafka, spark-submit;
the score job catches up through its wrapper, the join runs as its query in the test process.

The app publishes its scores on a fresh events topic; the Redis source publishes
the tests on the stack's `redis-server`, which every job reads from where it stood
before `make run` started (the simulator's customers are new, so that is their
whole history).
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time
import uuid

import pytest
from kafka import KafkaConsumer, TopicPartition

from stedi.stack.services import ROOT
from tests.app_server import AppServer, free_port, logged_in
from tests.scripts import join_job
from tests.stack_support import TopicReader, create_topics, read_all, submit

pytestmark = [pytest.mark.integration, pytest.mark.slow]

MIN_SCORES = 100


def end_offset(settings, topic: str) -> int:
    consumer = KafkaConsumer(bootstrap_servers=settings.kafka_bootstrap_servers)
    try:
        tp = TopicPartition(topic, 0)
        return consumer.end_offsets([tp])[tp]
    finally:
        consumer.close()


def values_of(settings, topic: str) -> list:
    """Every record a topic holds now, values parsed."""
    records = read_all(settings, topic, end_offset(settings, topic), timeout=60)
    return [json.loads(r.value) for r in records]


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
    """`make run` with the simulator at 30x on fresh topics until Spark has checked
    MIN_SCORES + 20 of the app's scores, then Ctrl-C; then the score job catches up
    from its checkpoint on the tests the app stored before it stopped.

    Returns the topics, the app's scores, the catch-up run's output, the folder
    and the starting offsets of every job (the stack's `redis-server` from the
    run's start, the events topic from its beginning).
    """
    unique, tmp_path = uuid.uuid4().hex[:10], tmp_path_factory.mktemp("risk-score")
    topics = {
        "STEDI_EVENTS_TOPIC": f"stedi-events-{unique}",
        "STEDI_SPARK_RISK_TOPIC": f"stedi-risk-spark-{unique}",
        "STEDI_RISK_QUALITY_TOPIC": f"risk-quality-{unique}",
        "STEDI_DEAD_LETTER_TOPIC": f"dead-letter-{unique}",
        "KAFKA_RISK_TOPIC": f"customer-risk-{unique}",
    }
    create_topics(stack, *topics.values())
    redis_start = end_offset(stack, stack.redis_topic)
    offsets = {stack.redis_topic: {"0": redis_start}, topics["STEDI_EVENTS_TOPIC"]: {"0": -2}}
    jobs_env = {
        **topics,
        "STEDI_CHECKPOINT_DIR": str(tmp_path / "checkpoints"),
        "STEDI_STARTING_OFFSETS": json.dumps(offsets),
    }
    env = {
        **os.environ,
        **jobs_env,
        "STEDI_APP_PORT": str(free_port()),
        "STEDI_SIMULATE": "1",
        "STEDI_SIM_SPEED": "30",
    }
    log_path = tmp_path / "make-run.log"
    reader = TopicReader(stack, topics["STEDI_RISK_QUALITY_TOPIC"])
    with open(log_path, "wb") as log:
        run = subprocess.Popen(
            ["make", "--no-print-directory", "run"],
            cwd=ROOT,
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,  # its own process group, as in a terminal
        )
    try:
        checks = reader.read(lambda rs: len(rs) >= MIN_SCORES + 20 or run.poll(), timeout=480)
    finally:
        os.killpg(run.pid, signal.SIGINT)  # Ctrl-C, as in a terminal
        run.wait(timeout=120)
        reader.close()
    assert len(checks) >= MIN_SCORES + 20, log_path.read_text()[-3000:]
    # every test the app stored has reached `redis-server` before Spark catches up
    wait_until_quiet(stack, stack.redis_topic)
    app_scores = values_of(stack, topics["STEDI_EVENTS_TOPIC"])
    output = submit("submit-score.sh", jobs_env)  # the score wrapper's own run too
    return topics, app_scores, output, tmp_path, jobs_env["STEDI_STARTING_OFFSETS"]


def as_text(value: dict) -> str:
    return json.dumps(value, sort_keys=True)


def test_spark_scores_agree_with_every_app_score(stack, simulated_run):
    topics, app_scores, output, _, _ = simulated_run
    spark_scores = values_of(stack, topics["STEDI_SPARK_RISK_TOPIC"])
    checks = values_of(stack, topics["STEDI_RISK_QUALITY_TOPIC"])
    assert len(app_scores) >= MIN_SCORES + 20
    # Kafka's sink writes at least once: a batch the Ctrl-C cut short is written again
    # by the catch-up run, so a score may appear twice, never be missing.
    assert {as_text(s) for s in spark_scores} == {as_text(s) for s in app_scores}
    assert len(checks) >= len(app_scores)
    assert all(c["agree"] is True and c["sparkScore"] == c["appScore"] for c in checks)
    assert {(c["customer"], c["riskDate"]) for c in checks} == {
        (s["customer"], s["riskDate"]) for s in app_scores
    }
    last = [line for line in output.splitlines() if line.startswith("[risk-score] batch ")]
    assert last and "agreement 100.0% of " in last[-1], output[-3000:]


def test_the_join_fed_from_spark_scores_writes_the_same_records(
    stack, unique, simulated_run, kafka_spark
):
    """The join's query in this process (kafka_spark), once per score source."""
    topics, app_scores, _, tmp_path, offsets = simulated_run
    outputs = {}
    for source in ("STEDI_EVENTS_TOPIC", "STEDI_SPARK_RISK_TOPIC"):
        name = source.lower().replace("_", "-")
        risk_topic = f"customer-risk-{name}-{unique}"
        create_topics(stack, risk_topic)
        kafka_spark(
            join_job,
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
        outputs[source] = values_of(stack, risk_topic)
    # One output per assessment read: the app's scores, and Spark's, whose exact repeats
    # (the score job's catch-up may write a batch again) the join's repeat filter drops:
    # they all arrive in one run, within one STEDI_RISK_WAIT.
    assert len(outputs["STEDI_EVENTS_TOPIC"]) == len(app_scores)
    spark_scores = values_of(stack, topics["STEDI_SPARK_RISK_TOPIC"])
    assessments = {(s["customer"], s["score"], s["riskDate"]) for s in spark_scores}
    assert len(outputs["STEDI_SPARK_RISK_TOPIC"]) == len(assessments)
    assert {as_text(v) for v in outputs["STEDI_SPARK_RISK_TOPIC"]} == {
        as_text(v) for v in outputs["STEDI_EVENTS_TOPIC"]
    }


def test_the_graph_page_says_how_many_scores_were_checked_and_agreed(
    stack, simulated_run, tmp_path
):
    topics = simulated_run[0]
    env = {"STEDI_RISK_QUALITY_TOPIC": topics["STEDI_RISK_QUALITY_TOPIC"]}
    checks = end_offset(stack, topics["STEDI_RISK_QUALITY_TOPIC"])
    app = AppServer(env, tmp_path / "app.log")
    try:
        client, _ = logged_in(app)
        expected = f"scores checked: {checks}, agreeing: {checks}"
        deadline, page = time.monotonic() + 30, ""
        while expected not in page and time.monotonic() < deadline:
            page = client.get("/graph").text
            time.sleep(0.5)
        assert expected in page
    finally:
        app.stop()
