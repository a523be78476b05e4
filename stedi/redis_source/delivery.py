"""Confirmed delivery to Kafka: nothing counts as published until Kafka says so.

kafka-python's `flush()` only logs a batch that failed (expired after
`delivery_timeout_ms`, refused by the broker) and returns normally, so the
source keeps the future of every record it sends and checks each one with
`get()`. A record Kafka refuses as too large becomes a small dead letter (the
source moves on); any other failure raises DeliveryError, and the source goes
back to its last confirmed position.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

from kafka import KafkaProducer
from kafka.errors import KafkaError, MessageSizeTooLargeError, RecordListTooLargeError

from stedi.config import Settings
from stedi.redis_source.records import too_large_record

log = logging.getLogger("stedi.redis_source")

REPLID_HEADER = "redis.replid"
OFFSET_HEADER = "redis.offset"
SNAPSHOT_HEADER = "redis.snapshot"
LINGER_MS = 5
TOO_LARGE = (MessageSizeTooLargeError, RecordListTooLargeError)


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

    def __init__(self, settings: Settings):
        self.settings = settings
        delivery_ms = settings.redis_source_delivery_timeout_ms
        # Kafka requires delivery timeout >= linger + request timeout.
        request_ms = max(1000, min(30000, delivery_ms - LINGER_MS))
        # Every future resolves within the delivery timeout; the margin covers the sender's
        # own scheduling. Waiting longer than this means the producer itself is stuck.
        self.wait_s = (delivery_ms + request_ms) / 1000 + 30
        self.producer = KafkaProducer(
            bootstrap_servers=settings.kafka_bootstrap_servers,
            acks="all",
            enable_idempotence=True,
            linger_ms=LINGER_MS,
            request_timeout_ms=request_ms,
            delivery_timeout_ms=max(delivery_ms, request_ms + LINGER_MS),
            max_block_ms=min(30000, delivery_ms),
        )
        self.pending: list[tuple[Outgoing, object]] = []
        self.too_large: list[tuple[Outgoing, int, str]] = []
        self.confirmed = 0
        self.dead_letters = 0

    def send(self, record: Outgoing) -> None:
        """Queue a record; it counts only after `confirm()` returned."""
        try:
            future = self.producer.send(
                self.settings.redis_topic,
                key=record.key,
                value=record.value,
                headers=record.headers(),
            )
        except TOO_LARGE as exc:  # the producer's own size check, before sending
            self.too_large.append((record, len(record.value), str(exc)))
            return
        except KafkaError as exc:  # no metadata or no buffer within max_block_ms
            raise DeliveryError(f"cannot send to {self.settings.redis_topic}: {exc}") from exc
        self.pending.append((record, future))

    def confirm(self) -> int:
        """Wait until Kafka confirmed every record sent since the last call; returns how many.

        Records refused as too large are dead-lettered (and those confirmed) first.
        Raises DeliveryError if any record is not confirmed.
        """
        pending, self.pending = self.pending, []
        failures = []
        for record, future in pending:
            try:
                future.get(timeout=self.wait_s)
            except TOO_LARGE as exc:  # the broker's limit (the topic's max.message.bytes)
                self.too_large.append((record, len(record.value), str(exc)))
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
        """Close the producer, bounded so an unreachable Kafka cannot hang a stop or a retry.

        close() raises, and leaves the sender thread running, when its flush does not
        finish in time; the sender is then force-closed (it fails what is left, which
        the source resends from its last confirmed position anyway).
        """
        try:
            self.producer.close(timeout=5)
            return
        except KafkaError as exc:
            log.warning("Kafka producer did not flush within 5 s (%s): force-closing it", exc)
        sender = self.producer._sender  # kafka-python has no public forced close
        sender.force_close()
        sender.join(10)
        try:
            self.producer.close(timeout=0)
        except KafkaError as exc:
            log.warning("Kafka producer not closed cleanly: %s", exc)
