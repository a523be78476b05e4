"""Closing a kafka-python producer within a bound, for the app and the Redis source alike."""

from __future__ import annotations

import logging

from kafka import KafkaProducer
from kafka.errors import KafkaError


def close_within(producer: KafkaProducer, timeout_s: float, log: logging.Logger) -> None:
    """Closes `producer`, never raising and never hanging past its bound.

    kafka-python's close raises, and leaves its sender thread running, when its flush does
    not finish in time (a broker gone with a batch in flight): the sender is then
    force-closed, failing what is left, which both callers send again anyway.
    """
    try:
        producer.close(timeout=timeout_s)
        return
    except KafkaError as exc:
        log.warning(
            "Kafka producer did not flush within %g s (%s): force-closing it", timeout_s, exc
        )
    sender = producer._sender  # kafka-python has no public forced close
    sender.force_close()
    sender.join(10)
    try:
        producer.close(timeout=0)
    except KafkaError as exc:
        log.warning("Kafka producer not closed cleanly: %s", exc)
