"""The Redis source's loop: resume from Kafka, PSYNC, publish, confirm, acknowledge.

Lossless across restarts and outages: each published record carries the
replication id and offset of its command in Kafka headers, so the topic itself
remembers how far the source got. On start the source reads the newest record
of the topic (and its state file) and asks Redis to continue right after it
(PSYNC). Redis keeps the writes in its replication backlog (sized in the stack's
redis.conf) while the source is down or Kafka is.

A position is saved, and acknowledged to Redis, only once Kafka has confirmed
every record up to it. When Kafka fails to confirm a record (down, hung past the
delivery timeout), the source marks its last confirmed position as the exact
place to resume, drops the link and the producer, and retries with back-off;
records Kafka had stored after that position are then published again (same
`redis.replid` and `redis.offset` headers: a repeat). A record too large for
the topic is dead-lettered as a small record, and the source moves on.

Only when Redis cannot continue (first start, backlog overrun, Redis restarted
under a new replication id) does it do a full resync: it then publishes every
member of every sorted set and every string once more, which it logs, and goes
on from the resync point. Writes made during that snapshot may then appear twice.
"""

from __future__ import annotations

import dataclasses
import logging
import signal
import threading
import time

import redis
from kafka import KafkaAdminClient, KafkaConsumer, TopicPartition

from stedi.config import Settings
from stedi.redis_source import metrics
from stedi.redis_source.delivery import (
    OFFSET_HEADER,
    REPLID_HEADER,
    SNAPSHOT_HEADER,
    Delivery,
    DeliveryError,
    Outgoing,
    topic_record_limit,
)
from stedi.redis_source.health import Heartbeat, LinkState, Status
from stedi.redis_source.records import command_record, set_value, zadd_value
from stedi.redis_source.replication import ReplicaConnection, SyncResult
from stedi.redis_source.state import Position, load_state, resume_position, save_state

log = logging.getLogger("stedi.redis_source")

SNAPSHOT_CHUNK = 500  # snapshot records confirmed at a time
KAFKA_READ_TIMEOUT_MS = 20000


@dataclasses.dataclass(frozen=True)
class Published:
    """Where a record of the topic came from in Redis's replication stream, and when."""

    timestamp: int  # Kafka's, in ms: the newest of the partitions' last records wins
    position: Position

    @classmethod
    def of(cls, record) -> Published | None:
        """None for a record the source did not write (no replication headers)."""
        headers = dict(record.headers or [])
        if REPLID_HEADER not in headers:
            return None
        position = Position(
            headers[REPLID_HEADER].decode(),
            int(headers[OFFSET_HEADER]),
            headers.get(SNAPSHOT_HEADER) == b"1",
        )
        return cls(record.timestamp, position)


@dataclasses.dataclass(frozen=True)
class ResumePoint:
    """Where a connection starts: the position to PSYNC from (None: a full resync), and up
    to which offset of that stream saved positions must stay exact."""

    position: Position | None
    exact_until: int


def resume_point(settings: Settings) -> ResumePoint:
    """The first phase of a connection: what Kafka holds and the state file remember."""
    in_kafka = newest_published(settings)
    position = resume_position(in_kafka, load_state(settings.redis_source_state))
    # Resuming after a failed delivery: until the stream passes the newest record Kafka
    # holds, saved positions stay exact (the file must keep winning over the topic).
    exact_until = in_kafka.offset if position and position.exact else -1
    return ResumePoint(position, exact_until)


def newest_published(settings: Settings) -> Position | None:
    """The position of the newest record the source published to the topic, if any."""
    consumer = KafkaConsumer(
        bootstrap_servers=settings.kafka_bootstrap_servers,
        enable_auto_commit=False,
        group_id=None,
        request_timeout_ms=KAFKA_READ_TIMEOUT_MS,
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
        published = [p for p in map(Published.of, tails.values()) if p is not None]
        return max(published, key=lambda p: p.timestamp).position if published else None
    finally:
        consumer.close()


class KafkaProbe:
    """A metadata request to Kafka, for the health file: raises when Kafka does not answer."""

    def __init__(self, settings: Settings):
        self.settings = settings
        self.admin: KafkaAdminClient | None = None

    def __call__(self) -> None:
        try:
            if self.admin is None:
                self.admin = KafkaAdminClient(
                    bootstrap_servers=self.settings.kafka_bootstrap_servers,
                    client_id="stedi-redis-source-health",
                    request_timeout_ms=5000,
                )
            if self.settings.redis_topic not in self.admin.list_topics():
                raise RuntimeError(f"topic {self.settings.redis_topic!r} does not exist")
        except Exception:
            self.close()
            raise

    def close(self) -> None:
        if self.admin is not None:
            admin, self.admin = self.admin, None
            try:
                admin.close()
            except Exception as exc:  # closing a client of a dead broker may fail too
                log.debug("closing the health probe's Kafka client: %s", exc)


class RedisSource:
    def __init__(self, settings: Settings):
        self.settings = settings
        self.state_file = settings.redis_source_state
        self.password = settings.redis_password
        self.stop_event = threading.Event()
        delivery_s = settings.redis_source_delivery_timeout_ms / 1000
        # A confirm may wait about two delivery timeouts; no progress for longer is a wedge.
        self.status = Status(stall_limit=2 * delivery_s + 90)
        self.published = 0
        self.dead_letters = 0
        self.confirmed: Position | None = None  # the newest position Kafka has confirmed
        self.last_confirmed_at: float | None = None  # when Kafka last confirmed a record

    def _count(self, delivery: Delivery) -> None:
        """Carry the producer's confirmed counts into the source's totals (and the health file)."""
        if delivery.confirmed or delivery.dead_letters:
            self.last_confirmed_at = time.time()
        self.published += delivery.confirmed
        self.dead_letters += delivery.dead_letters
        delivery.confirmed = delivery.dead_letters = 0
        self.status.published, self.status.dead_letters = self.published, self.dead_letters

    def _snapshot(self, delivery: Delivery, link: ReplicaConnection, sync: SyncResult) -> int:
        """Publish what Redis holds now: every sorted-set member and every string.

        Confirmed in chunks; the replication link is acknowledged every second meanwhile,
        so Redis does not drop a replica that is busy with a long snapshot.
        """
        client = redis.Redis(
            host=self.settings.redis_host,
            port=self.settings.redis_port,
            password=self.password,
            socket_timeout=30,
            socket_connect_timeout=10,
        )
        count, last_ack = 0, time.monotonic()

        def emit(key: bytes, value: bytes, command: str) -> None:
            nonlocal count, last_ack
            delivery.send(Outgoing(key, value, command, sync.replid, sync.offset, snapshot=True))
            count += 1
            if len(delivery.pending) >= SNAPSHOT_CHUNK:
                delivery.confirm()
                self._count(delivery)
                self.status.progress()
            if time.monotonic() - last_ack >= 1.0:
                link.ack(sync.offset)
                last_ack = time.monotonic()

        try:
            for key in client.scan_iter(_type="zset", count=1000):
                for member, score in client.zscan_iter(key, count=SNAPSHOT_CHUNK):
                    emit(key, zadd_value(key, [(member, float(score))]), "ZADD")
            for key in client.scan_iter(_type="string", count=1000):
                value = client.get(key)
                if value is not None:
                    emit(key, set_value(key, value), "SET")
        finally:
            client.close()
        delivery.confirm()
        self._count(delivery)
        return count

    def run_once(self) -> None:
        """One connection's life, in phases: resume, sync (a snapshot when Redis cannot
        continue), stream until stopped or broken."""
        self.status.redis = LinkState.CONNECTING
        resume = resume_point(self.settings)
        delivery = Delivery(self.settings, topic_record_limit(self.settings))
        link = ReplicaConnection(self.settings.redis_host, self.settings.redis_port, self.password)
        self.confirmed = resume.position  # everything up to here is confirmed by Kafka
        try:
            start = self._sync(link, delivery, resume)
            self._stream(link, delivery, start)
        except DeliveryError as exc:
            self.status.delivery_error = str(exc)
            confirmed = self.confirmed
            if confirmed is not None:
                # What Kafka stored after `confirmed` may have gaps: resume exactly here.
                save_state(self.state_file, dataclasses.replace(confirmed, exact=True))
            where = f"offset {confirmed.offset} of {confirmed.replid}" if confirmed else "a resync"
            raise DeliveryError(f"{exc}; going back to {where}") from exc
        finally:
            link.close()
            delivery.close()

    def _sync(
        self, link: ReplicaConnection, delivery: Delivery, resume: ResumePoint
    ) -> ResumePoint:
        """PSYNC from the resume point; after a full resync, publish the snapshot first.

        Returns where the stream starts, which is saved and confirmed by then."""
        position = resume.position
        if position is None:
            sync = link.psync(None, None)
        else:
            sync = link.psync(position.replid, position.offset)
        exact_until = resume.exact_until
        if sync.full:
            self.status.redis = LinkState.SYNCING
            reason = f"cannot continue {position}" if position else "nothing published yet"
            log.warning("full resync (%s): publishing a snapshot of Redis", reason)
            count = self._snapshot(delivery, link, sync)
            log.warning("full resync done: %d records published from the snapshot", count)
            exact_until = -1  # a new stream: the snapshot republished everything
        else:
            log.info("continuing replication %s after offset %d", sync.replid, sync.offset)
        start = Position(sync.replid, sync.offset, exact=sync.offset < exact_until)
        self.confirmed = start
        save_state(self.state_file, start)
        return ResumePoint(start, exact_until)

    def _stream(self, link: ReplicaConnection, delivery: Delivery, start: ResumePoint) -> None:
        """Publish the replication stream, confirm each batch, acknowledge it, until stopped."""
        status = self.status
        replid, offset, saved = start.position.replid, start.position.offset, start.position
        status.redis, status.last_error, status.delivery_error = LinkState.STREAMING, "", ""
        last_report = saved_at = time.monotonic()
        while not self.stop_event.is_set():
            status.position = f"{replid}@{offset}"
            status.progress()
            for argv, size in link.read_commands():
                offset += size
                record = command_record(argv)
                if record is not None:
                    command = argv[0].upper().decode(errors="replace")
                    delivery.send(Outgoing(record.key, record.value, command, replid, offset))
            delivery.confirm()  # raises DeliveryError: nothing below runs then
            self._count(delivery)
            status.delivery_error = ""
            self.confirmed = Position(replid, offset, exact=offset < start.exact_until)
            link.ack(offset)
            # Saved once a second, not per batch (an fsync each): Kafka's newest record
            # is the truth of what was published, the file only has to catch up.
            if self.confirmed != saved and time.monotonic() - saved_at >= 1.0:
                save_state(self.state_file, self.confirmed)
                saved, saved_at = self.confirmed, time.monotonic()
            if time.monotonic() - last_report >= 30:
                log.info("%d records published so far, offset %d", self.published, offset)
                last_report = time.monotonic()
        save_state(self.state_file, self.confirmed)  # stopped: everything confirmed is saved

    def run(self) -> None:
        """Run until stopped; on any failure, start over from the last confirmed position."""
        heartbeat = Heartbeat(
            self.status, self.state_file, KafkaProbe(self.settings), self.stop_event
        )
        heartbeat.start()
        backoff = 1.0
        while not self.stop_event.is_set():
            try:
                self.run_once()
            except Exception as exc:  # Kafka or Redis down: both are retried
                if self.status.redis is LinkState.STREAMING:
                    backoff = 1.0  # it worked until now: retry soon
                self.status.redis = LinkState.RETRYING
                self.status.last_error = f"{type(exc).__name__}: {exc}"
                log.error("%s: retrying in %.0f s", self.status.last_error, backoff)
                self.stop_event.wait(backoff)
                backoff = min(backoff * 2, 30.0)
            else:
                backoff = 1.0
        heartbeat.thread.join(timeout=10)
        log.info(
            "stopped after publishing %d records (%d dead letters)",
            self.published,
            self.dead_letters,
        )


def main() -> None:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(levelname)s %(message)s")
    settings = Settings()
    source = RedisSource(settings)
    metrics.serve(source)
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: source.stop_event.set())
    log.info(
        "Redis %s:%d -> Kafka %s topic %s (dead letters to %s)",
        settings.redis_host,
        settings.redis_port,
        settings.kafka_bootstrap_servers,
        settings.redis_topic,
        settings.dead_letter_topic,
    )
    source.run()
