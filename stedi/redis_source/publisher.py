"""The Redis source's loop: resume from Kafka, PSYNC, publish, acknowledge.

Lossless and without duplicates across restarts: each published record carries
the replication id and offset of its command in Kafka headers, so the topic
itself remembers how far the source got. On start the source reads the newest
record of the topic and asks Redis to continue right after it (PSYNC). Redis
keeps the writes in its replication backlog (sized in the stack's redis.conf)
while the source is down. Only when Redis cannot continue (first start, backlog
overrun, Redis restarted under a new replication id) does it do a full resync:
it then publishes every member of every sorted set and every string once more,
which it logs, and goes on from the resync point. Writes made during that
snapshot may then appear twice.
"""

from __future__ import annotations

import json
import logging
import os
import signal
import threading
import time
from dataclasses import dataclass

import redis
from kafka import KafkaConsumer, KafkaProducer, TopicPartition

from stedi.config import Settings
from stedi.redis_source.records import command_record, set_value, zadd_value
from stedi.redis_source.replication import ReplicaConnection, SyncResult

log = logging.getLogger("stedi.redis_source")

REPLID_HEADER = "redis.replid"
OFFSET_HEADER = "redis.offset"
SNAPSHOT_HEADER = "redis.snapshot"
SNAPSHOT_CHUNK = 500


@dataclass(frozen=True)
class Position:
    """A point of a Redis replication stream: everything up to `offset` is published."""

    replid: str
    offset: int
    snapshot: bool = False  # a snapshot record: the snapshot may not have finished


def newest_published(settings: Settings) -> Position | None:
    """The position of the newest record the source published to the topic, if any."""
    consumer = KafkaConsumer(
        bootstrap_servers=settings.kafka_bootstrap_servers,
        enable_auto_commit=False,
        group_id=None,
    )
    try:
        partitions = consumer.partitions_for_topic(settings.redis_topic)
        if not partitions:
            raise RuntimeError(
                f"topic {settings.redis_topic!r} does not exist: create it (make up does)"
            )
        tps = [TopicPartition(settings.redis_topic, p) for p in partitions]
        consumer.assign(tps)
        ends = consumer.end_offsets(tps)
        wanted = {tp for tp in tps if ends[tp] > 0}
        for tp in wanted:
            consumer.seek(tp, ends[tp] - 1)
        tails = {}
        deadline = time.monotonic() + 30
        while wanted - tails.keys() and time.monotonic() < deadline:
            for tp, records in consumer.poll(timeout_ms=1000).items():
                tails[tp] = records[-1]
        if wanted - tails.keys():
            raise RuntimeError("could not read the newest records of the topic")
        positions = []
        for record in tails.values():
            headers = dict(record.headers or [])
            if REPLID_HEADER in headers:
                positions.append(
                    (
                        record.timestamp,
                        Position(
                            headers[REPLID_HEADER].decode(),
                            int(headers[OFFSET_HEADER]),
                            headers.get(SNAPSHOT_HEADER) == b"1",
                        ),
                    )
                )
        return max(positions, key=lambda p: p[0])[1] if positions else None
    finally:
        consumer.close()


def load_state(path: str) -> Position | None:
    try:
        with open(path) as f:
            data = json.load(f)
        return Position(data["replid"], int(data["offset"]))
    except FileNotFoundError:
        return None
    except (ValueError, KeyError) as exc:
        log.warning("ignoring unreadable state file %s: %s", path, exc)
        return None


def save_state(path: str, position: Position) -> None:
    """Atomically record that everything up to `position` is published (and acknowledged)."""
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    tmp = f"{path}.tmp"
    with open(tmp, "w") as f:
        json.dump({"replid": position.replid, "offset": position.offset}, f)
    os.replace(tmp, path)


def resume_position(in_kafka: Position | None, in_file: Position | None) -> Position | None:
    """Where to PSYNC from; None means a full resync.

    Kafka is the truth of what was published (the file may lag by one flush after
    a crash); the file also remembers commands that published nothing (PING,
    other commands) and that a snapshot finished.
    """
    if in_kafka is None:
        return None  # empty topic: (re)publish everything
    same_stream = in_file is not None and in_file.replid == in_kafka.replid
    if same_stream and in_file.offset >= in_kafka.offset:
        return in_file
    if in_kafka.snapshot:
        return None  # a snapshot that did not finish
    return in_kafka


class RedisSource:
    def __init__(self, settings: Settings):
        self.settings = settings
        self.state_file = settings.redis_source_state
        self.password = settings.redis_password
        self.stop_event = threading.Event()
        self.published = 0

    def _producer(self) -> KafkaProducer:
        return KafkaProducer(
            bootstrap_servers=self.settings.kafka_bootstrap_servers,
            acks="all",
            enable_idempotence=True,
            linger_ms=5,
            max_block_ms=30000,
        )

    def _send(self, producer, key: bytes, value: bytes, replid: str, offset: int, snapshot=False):
        headers = [(REPLID_HEADER, replid.encode()), (OFFSET_HEADER, str(offset).encode())]
        if snapshot:
            headers.append((SNAPSHOT_HEADER, b"1"))
        producer.send(self.settings.redis_topic, key=key, value=value, headers=headers)
        self.published += 1

    def _snapshot(self, producer, sync: SyncResult) -> int:
        """Publish what Redis holds now: every sorted-set member and every string."""
        client = redis.Redis(
            host=self.settings.redis_host, port=self.settings.redis_port, password=self.password
        )
        count = 0
        try:
            for key in client.scan_iter(_type="zset", count=1000):
                for member, score in client.zscan_iter(key, count=SNAPSHOT_CHUNK):
                    value = zadd_value(key, [(member, float(score))])
                    self._send(producer, key, value, sync.replid, sync.offset, snapshot=True)
                    count += 1
            for key in client.scan_iter(_type="string", count=1000):
                value = client.get(key)
                if value is not None:
                    record = set_value(key, value)
                    self._send(producer, key, record, sync.replid, sync.offset, snapshot=True)
                    count += 1
        finally:
            client.close()
        producer.flush()
        return count

    def run_once(self) -> None:
        """One connection's life: resume position, sync, stream until stopped or broken."""
        position = resume_position(newest_published(self.settings), load_state(self.state_file))
        producer = self._producer()
        link = ReplicaConnection(self.settings.redis_host, self.settings.redis_port, self.password)
        try:
            if position is None:
                sync = link.psync(None, None)
            else:
                sync = link.psync(position.replid, position.offset)
            replid, offset = sync.replid, sync.offset
            if sync.full:
                reason = f"cannot continue {position}" if position else "nothing published yet"
                log.warning("full resync (%s): publishing a snapshot of Redis", reason)
                count = self._snapshot(producer, sync)
                log.warning("full resync done: %d records published from the snapshot", count)
            else:
                log.info("continuing replication %s after offset %d", replid, offset)
            save_state(self.state_file, Position(replid, offset))
            last_report, saved = time.monotonic(), offset
            while not self.stop_event.is_set():
                sent = False
                for argv, size in link.read_commands():
                    offset += size
                    record = command_record(argv)
                    if record is not None:
                        self._send(producer, record[0], record[1], replid, offset)
                        sent = True
                if sent:
                    producer.flush()
                if offset != saved:
                    save_state(self.state_file, Position(replid, offset))
                    saved = offset
                link.ack(offset)
                if time.monotonic() - last_report >= 30:
                    log.info("%d records published so far, offset %d", self.published, offset)
                    last_report = time.monotonic()
        finally:
            link.close()
            # close() flushes; bounded so an unreachable Kafka cannot hang a stop.
            producer.close(timeout=10)

    def run(self) -> None:
        """Run until stopped; on any failure, start over from the position in Kafka."""
        backoff = 1.0
        while not self.stop_event.is_set():
            try:
                self.run_once()
            except Exception as exc:  # Kafka or Redis down: both are retried
                log.error("%s: retrying in %.0f s", exc, backoff)
                self.stop_event.wait(backoff)
                backoff = min(backoff * 2, 30.0)
            else:
                backoff = 1.0
        log.info("stopped after publishing %d records", self.published)


def main() -> None:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(levelname)s %(message)s")
    settings = Settings()
    source = RedisSource(settings)
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: source.stop_event.set())
    log.info(
        "Redis %s:%d -> Kafka %s topic %s",
        settings.redis_host,
        settings.redis_port,
        settings.kafka_bootstrap_servers,
        settings.redis_topic,
    )
    source.run()
