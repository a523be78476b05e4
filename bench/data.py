"""The bench's input in the real wire formats (docs/formats.md), built with tests/records.py."""

from __future__ import annotations

import sys
import time
from collections.abc import Iterable, Iterator
from datetime import datetime, timedelta, timezone

from kafka import KafkaProducer

from stedi.app.risk import MIN_TESTS, StepTest, risk_event, risk_score
from stedi.config import Settings
from tests.records import customer, customer_record, risk_record, step_test_record

RISK_DATE_ORIGIN = datetime(2026, 1, 1, tzinfo=timezone.utc)
TEST_INTERVAL_MS = 2000  # one test every 2 s in turn, as the simulator


def email(i: int) -> str:
    return f"Bench.Customer{i}@test.com"


def bench_customer(i: int) -> dict:
    return customer(f"Bench Customer{i}", email(i), f"{1936 + i % 30}-01-01")


def customer_records(count: int) -> Iterator[bytes]:
    """One single-member ZADD per customer, as the Redis source publishes them."""
    for i in range(count):
        yield customer_record(bench_customer(i)).encode()


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


def produce(
    settings: Settings, topic: str, records: Iterable[tuple[bytes, bytes]], total: int, what: str
) -> None:
    """(key, value) records as fast as the producer goes, with a line every quarter."""
    p = producer(settings, linger_ms=20, batch_size=256 * 1024)
    step = max(total // 4, 50_000)
    for n, (key, value) in enumerate(records, 1):
        p.send(topic, key=key, value=value)
        if n % step == 0:
            print(f"   {n:,} of {total:,} {what} produced", file=sys.stderr, flush=True)
    p.flush()
    p.close()


def produce_scores(settings: Settings, topic: str, ids: range, customers: int, label: str) -> None:
    """Risk scores, keyed by their publish time in ms as text."""
    records = (
        (str(int(time.time() * 1000)).encode(), risk_value(score_id, customers)) for score_id in ids
    )
    produce(settings, topic, records, len(ids), f"{label} risk scores")


# --- rapid step tests, for the risk-score job ------------------------------------------------
def step_test(j: int) -> StepTest:
    """Test j of the backlog: stop times 2 s apart, durations spread over 30-120 s."""
    origin_ms = int(RISK_DATE_ORIGIN.timestamp() * 1000)
    return StepTest(origin_ms + j * TEST_INTERVAL_MS, 30_000 + (j * 7919) % 90_001)


def step_tests_and_app_scores(
    tests: int, customers: int
) -> tuple[Iterator[tuple[bytes, bytes]], Iterator[tuple[bytes, bytes]]]:
    """The `redis-server` records of `tests` tests, customer j % `customers` taking test j,
    and the `stedi-events` records the app publishes for them (from each customer's 4th
    test on), built by the app's own model. Both as (key, value), in test order.
    """

    def zadds() -> Iterator[tuple[bytes, bytes]]:
        for j in range(tests):
            t = step_test(j)
            yield (
                b"RapidStepTest",
                step_test_record(bench_customer(j % customers), t.stop_ms, t.duration_ms).encode(),
            )

    def app_scores() -> Iterator[tuple[bytes, bytes]]:
        held: dict[int, list[StepTest]] = {}
        for j in range(tests):
            recent = held.setdefault(j % customers, [])
            recent.append(step_test(j))
            del recent[:-MIN_TESTS]  # a score needs the four most recent; stop times only grow
            risk = risk_score(recent)
            if risk is not None:
                yield risk_event(email(j % customers), risk)

    return zadds(), app_scores()


def expected_scores(tests: int, customers: int) -> int:
    """Scores the histories imply: a customer with n >= 4 tests gets n - 3."""
    per_customer = (tests // customers + (i < tests % customers) for i in range(customers))
    return sum(max(0, n - 3) for n in per_customer)
