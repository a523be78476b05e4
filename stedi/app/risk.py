"""The fall-risk model of STEDI-SPEC.md, pure: shared by manual tests and the simulator."""

from __future__ import annotations

import json
import random
from collections.abc import Sequence
from datetime import datetime, timezone

MIN_TESTS = 4
TOTAL_STEPS = 30


def risk_score(durations_ms: Sequence[int]) -> float | None:
    """Score from a customer's test durations (oldest first); None before the fourth test.

    Mean of the two most recent minus mean of the two before them, in seconds,
    rounded to 2 decimals: above zero is slower (a deterioration).
    """
    if len(durations_ms) < MIN_TESTS:
        return None
    a, b, c, d = durations_ms[-4:]
    return round(((c + d) / 2 - (a + b) / 2) / 1000, 2)


def risk_event(email: str, score: float, now: datetime | None = None) -> tuple[bytes, bytes]:
    """(key, value) of a `stedi-events` record: key = publish time in epoch ms."""
    now = now or datetime.now(timezone.utc)
    millis = int(now.timestamp() * 1000)
    risk_date = now.strftime("%Y-%m-%dT%H:%M:%S.") + f"{now.microsecond // 1000:03d}Z"
    value = {"customer": email, "score": score, "riskDate": risk_date}
    return str(millis).encode(), json.dumps(value, separators=(",", ":")).encode()


def is_deteriorating(birth_year: int) -> bool:
    """The simulator's customers born 1950-1960 get slower with every test."""
    return 1950 <= birth_year <= 1960


def next_duration_ms(previous_ms: int | None, birth_year: int, rng: random.Random) -> int:
    """The simulator's next test duration for a customer."""
    if previous_ms is None:
        return (120 - rng.randint(0, 59)) * 1000
    if is_deteriorating(birth_year):
        return previous_ms + rng.randint(0, 3000)
    return rng.randint(61, 120) * 1000
