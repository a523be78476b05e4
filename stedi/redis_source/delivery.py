"""Confirmed delivery to Kafka: nothing counts as published until Kafka says so.

kafka-python's `flush()` only logs a batch that failed (expired after
`delivery_timeout_ms`, refused by the broker) and returns normally, so the
source keeps the future of every record it sends and checks each one with
`get()`. Any failure raises DeliveryError, and the source goes back to its last
confirmed position.

A record too large for the topic is never sent: the broker's refusal is fatal to
kafka-python's idempotent producer (it then fails every record after it too), so
the source reads the topic's `max.message.bytes` and measures each record
itself. Such a record becomes a small dead letter, and the source moves on.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

from kafka import KafkaAdminClient, KafkaProducer
from kafka.admin import ConfigResource, ConfigResourceType
from kafka.errors import KafkaError

from stedi.config import Settings
from stedi.kafka_producer import close_within
from stedi.redis_source.records import too_large_record

log = logging.getLogger("stedi.redis_source")

REPLID_HEADER = "redis.replid"
OFFSET_HEADER = "redis.offset"
SNAPSHOT_HEADER = "redis.snapshot"
LINGER_MS = 5
# Room for the record batch's and the record's own framing around key, value and headers.
FRAMING_BYTES = 512


def topic_record_limit(settings: Settings) -> int:
    """The largest record the Redis topic accepts: its effective `max.message.bytes`."""
    admin = KafkaAdminClient(
        bootstrap_servers=settings.kafka_bootstrap_servers, request_timeout_ms=20000
    )
    try:
        topic = settings.redis_topic
        resource = ConfigResource(ConfigResourceType.TOPIC, topic, ["max.message.bytes"])
        configs = admin.describe_configs([resource], config_filter="all")
        return int(configs["topic"][topic]["max.message.bytes"]["value"])
    finally:
        admin.close()


def record_size(key: bytes, value: bytes, headers: list[tuple[str, bytes]]) -> int:
    """An upper bound of a record's size in a batch of its own."""
    return len(key) + len(value) + sum(len(k) + len(v) for k, v in headers) + FRAMING_BYTES


class DeliveryError(RuntimeError):
    """Kafka did not confirm a record: nothing after the last confirmed position counts."""


@dataclass(frozen=True)
class Outgoing:
    """One record of the Redis topic, with where its command was in the replication stream."""

    key: bytes
    value: bytes
    command: str
    replid: str
    offset: int
    snapshot: bool = False

    def headers(self) -> list[tuple[str, bytes]]:
        headers = [
            (REPLID_HEADER, self.replid.encode()),
            (OFFSET_HEADER, str(self.offset).encode()),
        ]
        if self.snapshot:
            headers.append((SNAPSHOT_HEADER, b"1"))
        return headers


class Delivery:
    """A Kafka producer whose sends are confirmed in batches by `confirm()`."""

    def __init__(self, settings: Settings, max_record_bytes: int, producer=None):
        self.settings = settings
        self.max_record_bytes = max_record_bytes
        delivery_ms = settings.redis_source_delivery_timeout_ms
        # Kafka requires delivery timeout >= linger + request timeout.
        request_ms = max(1000, min(30000, delivery_ms - LINGER_MS))
        # Every future should resolve within the delivery timeout, but a batch in flight to
        # a hung broker was seen to outlive it (kafka-python 3.0.12): past this margin the
        # batch counts as failed.
        self.wait_s = delivery_ms / 1000 + 15
        self.producer = producer or KafkaProducer(
            bootstrap_servers=settings.kafka_bootstrap_servers,
            acks="all",
            enable_idempotence=True,
            linger_ms=LINGER_MS,
            request_timeout_ms=request_ms,
            delivery_timeout_ms=max(delivery_ms, request_ms + LINGER_MS),
            max_block_ms=min(30000, delivery_ms),
            max_request_size=max(max_record_bytes, 1048576),
            # A batch of several records stays under the topic's limit too.
            batch_size=min(16384, max_record_bytes),
        )
        self.pending: list[tuple[Outgoing, object]] = []
        self.too_large: list[tuple[Outgoing, int, str]] = []
        self.confirmed = 0
        self.dead_letters = 0

    def send(self, record: Outgoing) -> None:
        """Queue a record; it counts only after `confirm()` returned."""
        headers = record.headers()
        size = record_size(record.key, record.value, headers)
        if size > self.max_record_bytes:
            limit = f"over the topic's max.message.bytes of {self.max_record_bytes}"
            self.too_large.append((record, len(record.value), f"{size} bytes {limit}"))
            return
        try:
            future = self.producer.send(
                self.settings.redis_topic, key=record.key, value=record.value, headers=headers
            )
        except KafkaError as exc:  # no metadata or no buffer within max_block_ms
            raise DeliveryError(f"cannot send to {self.settings.redis_topic}: {exc!r}") from exc
        self.pending.append((record, future))

    def confirm(self) -> int:
        """Wait until Kafka confirmed every record sent since the last call; returns how many.

        The records too large for the topic are then dead-lettered (and those confirmed).
        Raises DeliveryError if any record is not confirmed.
        """
        pending, self.pending = self.pending, []
        if pending:
            try:  # sends at once, without waiting for linger_ms; failures are in the futures
                self.producer.flush(timeout=self.wait_s)
            except KafkaError as exc:
                raise DeliveryError(
                    f"Kafka did not confirm in {self.wait_s:.0f} s: {exc!r}"
                ) from exc
        failures = []
        for _record, future in pending:
            try:
                future.get(timeout=self.wait_s)
            except KafkaError as exc:
                failures.append(exc)
        if failures:
            raise DeliveryError(
                f"Kafka did not confirm {len(failures)} of {len(pending)} records "
                f"(first: {failures[0]!r})"
            )
        self._dead_letter_too_large()
        self.confirmed += len(pending)
        return len(pending)

    def _dead_letter_too_large(self) -> None:
        if not self.too_large:
            return
        futures = []
        for record, size, reason in self.too_large:
            key, value = too_large_record(
                record.key,
                record.command,
                size,
                self.settings.redis_topic,
                record.replid,
                record.offset,
                record.snapshot,
                f"record too large for topic {self.settings.redis_topic}: {reason}",
            )
            log.error(
                "a %s of %d bytes at offset %d of %s is too large for Kafka: "
                "dead-lettered to %s (key %r)",
                record.command,
                size,
                record.offset,
                record.replid,
                self.settings.dead_letter_topic,
                record.key[:80],
            )
            futures.append(
                self.producer.send(
                    self.settings.dead_letter_topic, key=key, value=value, headers=record.headers()
                )
            )
        for future in futures:
            try:
                future.get(timeout=self.wait_s)
            except KafkaError as exc:
                raise DeliveryError(f"cannot write a dead letter: {exc!r}") from exc
        self.dead_letters += len(self.too_large)
        self.too_large = []

    def close(self) -> None:
        """Close the producer, bounded so an unreachable Kafka cannot hang a stop or a retry
        (what a forced close fails, the source resends from its last confirmed position)."""
        close_within(self.producer, 5, log)
