"""Integration fixtures: the real local stack (Kafka, Redis, the Redis source).

The stack `make up` started is used as it is; when it is not up, the session
starts it and stops it at the end. A stack that cannot start fails the tests:
they never skip.
"""

from __future__ import annotations

import os
import subprocess
import time
import uuid
from pathlib import Path

import pytest
import redis
from kafka import KafkaAdminClient, KafkaConsumer, KafkaProducer, TopicPartition
from kafka.admin import NewTopic

from stedi.config import Settings
from stedi.stack import services
from tests.scripts import InProcessJobs


@pytest.fixture(scope="session")
def stack():
    settings = Settings()
    started = services.up(settings)  # only what `make up` did not start already
    yield settings
    if started:
        services.down(only=started)


@pytest.fixture(scope="session")
def kafka_spark(stack, spark):  # the stack first: it stops after the Spark session
    """Runs the entry scripts' queries on the real Kafka in this process's one
    SparkContext: `kafka_spark(module, env)` as `<wrapper> --available-now` would,
    `with kafka_spark.streaming(module, env):`
    as a stream. For tests of a query on Kafka; a test of a wrapper or of
    spark-submit itself runs the process. (Asking for this fixture is what gives
    the session Spark's Kafka connector: see tests/conftest.py.)"""
    return InProcessJobs(spark)


@pytest.fixture
def redis_client(stack):
    client = redis.Redis(host=stack.redis_host, port=stack.redis_port)
    yield client
    client.close()


@pytest.fixture
def unique():
    """A short unique word for topic names and Redis keys of one test."""
    return uuid.uuid4().hex[:10]


def job_topics(stack, unique: str, folder: Path) -> dict[str, str]:
    """Unique topics (created) and checkpoints, as the Spark jobs' environment."""
    env = {
        "STEDI_REDIS_TOPIC": f"redis-server-{unique}",
        "STEDI_EVENTS_TOPIC": f"stedi-events-{unique}",
        "KAFKA_RISK_TOPIC": f"customer-risk-{unique}",
        "STEDI_DEAD_LETTER_TOPIC": f"dead-letter-{unique}",
        "STEDI_CHECKPOINT_DIR": str(folder / "checkpoints"),
    }
    create_topics(stack, *(v for k, v in env.items() if k != "STEDI_CHECKPOINT_DIR"))
    return env


@pytest.fixture
def topics(stack, unique, tmp_path):
    """Unique topics and checkpoints for one test, as the Spark jobs' environment."""
    return job_topics(stack, unique, tmp_path)


def submit(wrapper: str, env: dict) -> str:
    """Runs a submit wrapper with --available-now on local Spark; its stdout, or fails."""
    return submit_side_by_side({wrapper: env})[wrapper]


def submit_side_by_side(runs: dict[str, dict]) -> dict[str, str]:
    """Runs submit wrappers (name -> its environment) with --available-now on local Spark,
    all at once: JVMs that start together wait less on each other than in turn. Each
    one's stdout, or fails with the first failed one's output."""
    started = {
        wrapper: subprocess.Popen(
            [str(services.ROOT / wrapper), "--available-now"],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env={**os.environ, **env, "STEDI_SUBMIT": "local"},
        )
        for wrapper, env in runs.items()
    }
    outputs = {}
    try:
        for wrapper, process in started.items():
            stdout, stderr = process.communicate(timeout=600)
            first_error = max(0, stderr.find("Exception") - 500)
            assert process.returncode == 0, (wrapper, stdout[-2000:] + stderr[first_error:][:4000])
            outputs[wrapper] = stdout
    finally:
        for process in started.values():
            if process.poll() is None:
                process.kill()
                process.wait()
    return outputs


def observed_totals(output: str, query: str) -> dict[str, int]:
    """The observed counts of `query`'s progress lines (`..., 3 state rows, 2 checks, 1
    agreeing`), summed over its batches: what the driver's listener printed."""
    totals: dict[str, int] = {}
    for line in output.splitlines():
        if line.startswith(f"[{query}] batch ") and " state rows" in line:
            for field in line.split(" state rows", 1)[1].split(", ")[1:]:
                count, name = field.split(" ", 1)
                totals[name] = totals.get(name, 0) + int(count)
    return totals


def console_rows(output: str) -> list[list[str]]:
    """The data rows of the console sink's tables (rows holding an email), sorted."""
    rows = [line for line in output.splitlines() if line.startswith("|") and "@" in line]
    return sorted([cell.strip() for cell in row.strip("|").split("|")] for row in rows)


def create_topics(settings: Settings, *names: str) -> None:
    admin = KafkaAdminClient(bootstrap_servers=settings.kafka_bootstrap_servers)
    try:
        admin.create_topics([NewTopic(n, 1, 1) for n in names])
    finally:
        admin.close()


def produce(settings: Settings, topic: str, values: list[str], key: bytes | None = None) -> None:
    producer = KafkaProducer(bootstrap_servers=settings.kafka_bootstrap_servers)
    for value in values:
        producer.send(topic, key=key, value=value.encode("utf-8"))
    producer.flush()
    producer.close()


class TopicReader:
    """Reads a topic from the position it had when the reader was made."""

    def __init__(self, settings: Settings, topic: str):
        self.consumer = KafkaConsumer(
            bootstrap_servers=settings.kafka_bootstrap_servers,
            enable_auto_commit=False,
            group_id=None,
        )
        self.tp = TopicPartition(topic, 0)
        self.consumer.assign([self.tp])
        self.consumer.seek_to_end(self.tp)
        self.consumer.position(self.tp)

    def read(self, until, timeout: float = 30.0) -> list:
        """Records read until `until(records)` is true or `timeout` passes."""
        records, deadline = [], time.monotonic() + timeout
        while time.monotonic() < deadline and not until(records):
            for batch in self.consumer.poll(timeout_ms=500).values():
                records.extend(batch)
        return records

    def read_quietly(self, seconds: float) -> list:
        """Every record that arrives within `seconds` (to prove nothing more comes)."""
        return self.read(lambda _: False, timeout=seconds)

    def close(self) -> None:
        self.consumer.close()


def read_all(settings: Settings, topic: str, expected: int, timeout: float = 30.0) -> list:
    consumer = KafkaConsumer(
        topic,
        bootstrap_servers=settings.kafka_bootstrap_servers,
        auto_offset_reset="earliest",
        enable_auto_commit=False,
        group_id=None,
    )
    records, deadline = [], time.monotonic() + timeout
    while len(records) < expected and time.monotonic() < deadline:
        for batch in consumer.poll(timeout_ms=500).values():
            records.extend(batch)
    consumer.close()
    return records
