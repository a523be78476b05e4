"""The Redis source under faults: a hung broker, kill -9, a Redis restart, a too-large write.

Each test runs its own source process (own state file, own topics) against the real
local Redis and Kafka, counts the writes that went into Redis and the records that came
out on its topic, and requires every write to be published.
"""

from __future__ import annotations

import base64
import json
import os
import signal
import sys
import threading
import time
from pathlib import Path

import pytest
from kafka import KafkaAdminClient, KafkaConsumer, TopicPartition
from kafka.admin import NewTopic

from stedi.redis_source import health
from stedi.stack import services
from tests.background import Background

pytestmark = pytest.mark.integration

DELIVERY_TIMEOUT_MS = 5000  # short, so a hang of a few seconds already outlasts it


class SourceProcess:
    """`python -m stedi.redis_source` with its own state file, topic and dead-letter topic."""

    def __init__(self, settings, workdir: Path, topic: str, dead_letters: str):
        self.settings, self.topic, self.dead_letters = settings, topic, dead_letters
        self.state = str(workdir / "source.json")
        self.log = workdir / "source.log"
        self.process: Background | None = None

    def start(self) -> None:
        env = {
            **os.environ,
            "KAFKA_BOOTSTRAP_SERVERS": self.settings.kafka_bootstrap_servers,
            "REDIS_PORT": str(self.settings.redis_port),
            "STEDI_REDIS_TOPIC": self.topic,
            "STEDI_DEAD_LETTER_TOPIC": self.dead_letters,
            "STEDI_REDIS_SOURCE_STATE": self.state,
            "STEDI_REDIS_SOURCE_DELIVERY_TIMEOUT_MS": str(DELIVERY_TIMEOUT_MS),
            "PYTHONUNBUFFERED": "1",
        }
        argv = [sys.executable, "-m", "stedi.redis_source"]
        self.process = Background(argv, env, self.log, cwd=services.ROOT)

    def wait_healthy(self, timeout: float = 120) -> None:
        wait_for(lambda: health.ready(self.state), timeout, f"source healthy\n{self.tail()}")

    def kill(self) -> None:
        self.process.kill()

    def stop(self) -> None:
        if self.process is not None:
            self.process.stop(grace=30)

    def log_text(self) -> str:
        return self.log.read_text(errors="replace")

    def tail(self, lines: int = 30) -> str:
        return "\n".join(self.log_text().splitlines()[-lines:])


def wait_for(condition, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return
        time.sleep(0.5)
    raise AssertionError(f"timed out after {timeout:.0f} s waiting for: {what}")


def create_topics(settings, *topics: NewTopic) -> None:
    admin = KafkaAdminClient(bootstrap_servers=settings.kafka_bootstrap_servers)
    try:
        admin.create_topics(list(topics))
    finally:
        admin.close()


class Topic:
    """Every record of one topic, read from the beginning and kept."""

    def __init__(self, settings, name: str):
        self.consumer = KafkaConsumer(
            bootstrap_servers=settings.kafka_bootstrap_servers,
            enable_auto_commit=False,
            group_id=None,
        )
        tp = TopicPartition(name, 0)
        self.consumer.assign([tp])
        self.consumer.seek_to_beginning(tp)
        self.records: list = []

    def read_until(self, condition, timeout: float) -> list:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline and not condition(self.records):
            for batch in self.consumer.poll(timeout_ms=500).values():
                self.records.extend(batch)
        return self.records

    def close(self) -> None:
        self.consumer.close()


def members_of(records, key: bytes) -> list[str]:
    """The members of `key`'s ZADD records, in topic order (repeats included)."""
    found = []
    for record in records:
        if record.key == key:
            for entry in json.loads(record.value)["zSetEntries"]:
                found.append(base64.b64decode(entry["element"]).decode())
    return found


def repeats(records, key: bytes) -> int:
    """Records of `key` whose (replication id, offset) came before: a republished write."""
    seen, count = set(), 0
    for record in records:
        if record.key == key:
            headers = dict(record.headers)
            position = (headers["redis.replid"], headers["redis.offset"], record.value)
            count += position in seen
            seen.add(position)
    return count


@pytest.fixture
def source(stack, tmp_path, unique):
    topic, dead_letters = f"source-{unique}", f"dead-{unique}"
    create_topics(
        stack,
        NewTopic(topic, 1, 1, topic_configs={"retention.ms": "-1"}),
        NewTopic(dead_letters, 1, 1),
    )
    process = SourceProcess(stack, tmp_path, topic, dead_letters)
    process.start()
    yield process
    process.stop()


class Writer(threading.Thread):
    """ZADDs `key` 0 `<prefix>-<i>` for i in range(n), one command each, a little apart."""

    def __init__(self, client, key: bytes, prefix: str, n: int, pause: float):
        super().__init__(daemon=True)
        self.client, self.key, self.prefix, self.n, self.pause = client, key, prefix, n, pause
        self.written: list[str] = []

    def run(self) -> None:
        for i in range(self.n):
            member = f"{self.prefix}-{i}"
            self.client.zadd(self.key, {member: i})
            self.written.append(member)
            time.sleep(self.pause)


def test_a_broker_hung_longer_than_the_delivery_timeout_loses_no_write(
    stack, source, redis_client, unique
):
    key = f"hung-{unique}".encode()
    source.wait_healthy()
    out = Topic(stack, source.topic)
    before = Writer(redis_client, key, "before", 50, 0)
    before.run()
    broker = services.KAFKA.pid()
    assert broker is not None, "Kafka is not running"
    during = Writer(redis_client, key, "during", 200, 0.05)
    os.kill(broker, signal.SIGSTOP)
    try:
        during.start()
        hung_for = 3 * DELIVERY_TIMEOUT_MS / 1000
        wait_for(lambda: not health.ready(source.state), hung_for, "source reported unhealthy")
        # Hung past the delivery timeout: the source saw it (no fixed wait), with writes
        # still coming (the writer takes about 10 s).
        wait_for(
            lambda: "did not confirm" in source.log_text(), 2 * hung_for, "the delivery timeout"
        )
        during.join()
    finally:
        os.kill(broker, signal.SIGCONT)
    after = Writer(redis_client, key, "after", 50, 0)
    after.run()

    written = before.written + during.written + after.written
    records = out.read_until(lambda rs: set(written) <= set(members_of(rs, key)), 180)
    out.close()
    published = members_of(records, key)
    print(
        f"broker hung: {len(written)} writes, {len(published)} records, "
        f"{len(set(published))} distinct, {repeats(records, key)} repeats"
    )
    assert "did not confirm" in source.log_text(), "the hang did not outlast the delivery timeout"
    assert set(published) == set(written), f"lost: {sorted(set(written) - set(published))[:10]}"
    source.wait_healthy(120)


def test_the_source_killed_with_sigkill_mid_stream_publishes_every_write_once_after_restart(
    stack, source, redis_client, unique
):
    key = f"killed-{unique}".encode()
    source.wait_healthy()
    out = Topic(stack, source.topic)
    writer = Writer(redis_client, key, "w", 400, 0.01)
    writer.start()
    out.read_until(lambda rs: len(members_of(rs, key)) >= 50, 60)  # mid-stream
    source.kill()
    writer.join()
    source.start()
    source.wait_healthy()

    records = out.read_until(lambda rs: set(writer.written) <= set(members_of(rs, key)), 120)
    records = out.read_until(lambda _: False, 3)  # anything more that would come
    out.close()
    published = members_of(records, key)
    print(f"kill -9: {len(writer.written)} writes, {len(published)} records")
    assert len(writer.written) == 400
    assert sorted(published) == sorted(writer.written), "every write exactly once"
    assert published == writer.written, "in write order"
    assert source.log_text().count("full resync (") == 1, "the restart continued, no resync"


def test_the_source_recovers_by_itself_when_redis_restarts(stack, source, redis_client, unique):
    key = f"restart-{unique}".encode()
    source.wait_healthy()
    out = Topic(stack, source.topic)
    before = Writer(redis_client, key, "before", 100, 0)
    before.run()
    out.read_until(lambda rs: set(before.written) <= set(members_of(rs, key)), 60)

    assert services.REDIS.stop(), "Redis was not running"
    wait_for(lambda: not health.ready(source.state), 30, "source reported unhealthy")
    services.start_redis(stack)
    redis_client.connection_pool.disconnect()
    after = Writer(redis_client, key, "after", 100, 0)
    after.run()
    source.wait_healthy(120)

    written = before.written + after.written
    records = out.read_until(lambda rs: set(written) <= set(members_of(rs, key)), 120)
    out.close()
    published = members_of(records, key)
    print(f"Redis restart: {len(written)} writes, {len(set(published))} distinct published")
    assert set(published) == set(written), f"lost: {sorted(set(written) - set(published))[:10]}"


def dead_letters_of(settings, topic: str, key: bytes, expected: int = 2) -> list:
    """The dead letters of `key` (their Kafka key is the Redis key) on `topic`."""
    letters = Topic(settings, topic)
    records = letters.read_until(lambda rs: len([r for r in rs if r.key == key]) >= expected, 60)
    letters.close()
    return [r for r in records if r.key == key]


def check_dead_letters(dead, key: bytes, topic: str, snapshot: bool) -> None:
    assert len(dead) == 2, "one dead letter per too-large write"
    for record in dead:
        assert len(record.value) < 2048, "a dead letter is small"
        letter = json.loads(record.value)
        assert letter["key"] == base64.b64encode(key).decode()
        assert letter["command"] == "ZADD" and letter["topic"] == topic
        assert letter["snapshot"] is snapshot
        assert isinstance(letter["offset"], int) and letter["replid"]
        assert "too large" in letter["reason"]
    sizes = sorted(json.loads(r.value)["size"] for r in dead)
    assert 300000 < sizes[0] < 1024 * 1024 and sizes[1] > 2 * 1024 * 1024


def test_a_write_too_large_for_the_topic_becomes_a_small_dead_letter_and_later_writes_go_on(
    stack, tmp_path, redis_client, unique
):
    key = f"big-{unique}".encode()
    topic, dead_letters = f"source-{unique}", f"dead-{unique}"
    # Under the producer's default limit (1 MiB), so the topic's own limit must be honoured.
    create_topics(
        stack,
        NewTopic(topic, 1, 1, topic_configs={"max.message.bytes": "300000"}),
        NewTopic(dead_letters, 1, 1),
    )
    huge = "h" * (2 * 1024 * 1024)  # ~5.6 MB as a record (base64, twice)
    large = "l" * (150 * 1024)  # ~400 KB as a record: over this topic's limit only
    small = [f"small-{i}" for i in range(10)]
    process = SourceProcess(stack, tmp_path, topic, dead_letters)
    process.start()
    try:
        process.wait_healthy()
        redis_client.zadd(key, {small[0]: 0})
        redis_client.zadd(key, {huge: 1})
        redis_client.zadd(key, {large: 2})
        for member in small[1:]:
            redis_client.zadd(key, {member: 3})
        live = Topic(stack, topic)
        records = live.read_until(lambda rs: len(members_of(rs, key)) >= 10, 60)
        live.close()
        assert members_of(records, key) == small, "every small write, in order"
        check_dead_letters(dead_letters_of(stack, dead_letters, key), key, topic, False)
        process.stop()

        # A full resync (a new source, an empty topic) meets the same members in its
        # snapshot: dead letters again, and the snapshot goes on.
        snapshot_topic, snapshot_dead = f"snapshot-{unique}", f"snapdead-{unique}"
        create_topics(
            stack,
            NewTopic(snapshot_topic, 1, 1, topic_configs={"max.message.bytes": "300000"}),
            NewTopic(snapshot_dead, 1, 1),
        )
        workdir = tmp_path / "snapshot"
        workdir.mkdir()
        process = SourceProcess(stack, workdir, snapshot_topic, snapshot_dead)
        process.start()
        process.wait_healthy()
        snapshot = Topic(stack, snapshot_topic)
        records = snapshot.read_until(lambda rs: len(members_of(rs, key)) >= 10, 60)
        snapshot.close()
        assert sorted(members_of(records, key)) == sorted(small)
        dead = dead_letters_of(stack, snapshot_dead, key)
        check_dead_letters(dead, key, snapshot_topic, True)
    finally:
        process.stop()
        redis_client.delete(key)
