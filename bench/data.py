"""The bench's input in the real wire formats (STEDI-SPEC.md), built with tests/records.py."""

from __future__ import annotations

import sys
import time
from collections.abc import Iterator
from datetime import datetime, timedelta, timezone

from kafka import KafkaProducer

from stedi.config import Settings
from tests.records import customer, customer_record, risk_record

RISK_DATE_ORIGIN = datetime(2026, 1, 1, tzinfo=timezone.utc)


def email(i: int) -> str:
    return f"Bench.Customer{i}@test.com"


def customer_records(count: int) -> Iterator[bytes]:
    """One single-member ZADD per customer, as the Redis source publishes them."""
    for i in range(count):
        birth_day = f"{1936 + i % 30}-01-01"
        yield customer_record(customer(f"Bench Customer{i}", email(i), birth_day)).encode()


def score_of(score_id: int) -> float:
    """A score that names its risk score: id 12345 is 123.45 (the output carries no riskDate)."""
    return score_id / 100


def score_id_of(score: float | str) -> int:
    return round(float(score) * 100)


def risk_value(score_id: int, customers: int) -> bytes:
    risk_date = RISK_DATE_ORIGIN + timedelta(milliseconds=score_id)
    stamp = risk_date.strftime("%Y-%m-%dT%H:%M:%S.") + f"{risk_date.microsecond // 1000:03d}Z"
    return risk_record(email(score_id % customers), score_of(score_id), stamp).encode()


def producer(settings: Settings, **options) -> KafkaProducer:
    return KafkaProducer(bootstrap_servers=settings.kafka_bootstrap_servers, **options)


def produce_customers(settings: Settings, topic: str, count: int) -> None:
    p = producer(settings, linger_ms=20)
    for value in customer_records(count):
        p.send(topic, key=b"Customer", value=value)  # the source keys by the Redis key
    p.flush()
    p.close()


def produce_scores(settings: Settings, topic: str, ids: range, customers: int, label: str) -> None:
    """Risk scores as fast as the producer goes, keyed by their publish time in ms as text."""
    p = producer(settings, linger_ms=20, batch_size=256 * 1024)
    step = max(len(ids) // 4, 50_000)
    for n, score_id in enumerate(ids, 1):
        p.send(
            topic, key=str(int(time.time() * 1000)).encode(), value=risk_value(score_id, customers)
        )
        if n % step == 0:
            print(
                f"   {label}: {n:,} of {len(ids):,} risk scores produced",
                file=sys.stderr,
                flush=True,
            )
    p.flush()
    p.close()
