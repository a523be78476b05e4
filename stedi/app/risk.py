"""The fall-risk model of docs/formats.md, pure: shared by manual tests and the simulator.

As the original STEDI app computes it: previous two tests minus recent two, so a
score above zero means the customer got faster (improved), below zero slower.
"""

from __future__ import annotations

import json
import random
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime, timezone
from decimal import ROUND_HALF_UP, Decimal

MIN_TESTS = 4
TOTAL_STEPS = 30
CENTS = Decimal("0.01")
# The caregiver's label for a score: within +/-1 s is steady. A person clicks 30 steps by
# hand and the score compares means of two tests, so a second either way is noise, not a
# change in balance (tests take 60-120 s).
STEADY_SECONDS = 1.0


@dataclass(frozen=True)
class StepTest:
    """What the score needs of a stored rapid step test, in epoch milliseconds."""

    stop_ms: int
    duration_ms: int


@dataclass(frozen=True)
class Risk:
    """A customer's score and its date: the stop time of the most recent test."""

    score: float
    risk_date_ms: int


def risk_score(tests: Iterable[StepTest]) -> Risk | None:
    """The risk from a customer's tests, in any order; None before the fourth test.

    The four most recent tests by stop time: mean duration of the two before
    minus mean of the two most recent, in seconds, rounded HALF_UP to 2 decimals
    in decimal arithmetic (float `round` gives 1.0 for 1.005), never -0.0.
    """
    recent = sorted(tests, key=lambda t: t.stop_ms)[-MIN_TESTS:]
    if len(recent) < MIN_TESTS:
        return None
    a, b, c, d = (t.duration_ms for t in recent)
    # (a+b)/2 - (c+d)/2 ms = (a+b-c-d)/2000 s: exact in Decimal, no float on the way.
    score = (Decimal(a + b - c - d) / 2000).quantize(CENTS, rounding=ROUND_HALF_UP)
    if score.is_zero():
        score = Decimal(0)  # -0.004 rounds to -0.00: written as 0.0, not -0.0
    return Risk(float(score), recent[-1].stop_ms)


def most_recent(tests: Iterable[StepTest]) -> list[StepTest]:
    """The MIN_TESTS most recent of `tests` by stop time, oldest first, each test once: all
    that `risk_score` reads, so a customer's risk is kept with these alone."""
    return sorted(set(tests), key=lambda t: (t.stop_ms, t.duration_ms))[-MIN_TESTS:]


def risk_after_each(tests: Iterable[StepTest]) -> list[tuple[StepTest, Risk | None]]:
    """Each test, in stop order, with the risk the app computes when it stores the tests in
    that order: the score from the four most recent up to it (None before the fourth)."""
    ordered = sorted(tests, key=lambda t: t.stop_ms)
    return [
        (test, risk_score(ordered[max(0, i + 1 - MIN_TESTS) : i + 1]))
        for i, test in enumerate(ordered)
    ]


def trend(score: float) -> str:
    """improved (faster lately), deteriorated (slower) or steady, by STEADY_SECONDS."""
    if score > STEADY_SECONDS:
        return "improved"
    if score < -STEADY_SECONDS:
        return "deteriorated"
    return "steady"


def iso_millis(epoch_ms: int) -> str:
    """`2020-09-14T07:54:06.417Z`: ISO-8601 UTC with milliseconds, as the original."""
    moment = datetime.fromtimestamp(epoch_ms // 1000, timezone.utc)
    return moment.strftime("%Y-%m-%dT%H:%M:%S.") + f"{epoch_ms % 1000:03d}Z"


def risk_event(email: str, risk: Risk, now: datetime | None = None) -> tuple[bytes, bytes]:
    """(key, value) of a `stedi-events` record: key = publish time in epoch ms as a string."""
    now = now or datetime.now(timezone.utc)
    millis = int(now.timestamp() * 1000)
    value = risk_record(email, risk)
    return str(millis).encode(), json.dumps(value, separators=(",", ":")).encode()


def risk_record(email: str, risk: Risk) -> dict:
    """A `stedi-events` value: also the answer of the app's per-customer risk lookup."""
    return {"customer": email, "score": risk.score, "riskDate": iso_millis(risk.risk_date_ms)}


def is_deteriorating(birth_year: int) -> bool:
    """The simulator's customers born 1950-1960 get slower with every test."""
    return 1950 <= birth_year <= 1960


def next_duration_ms(previous_ms: int | None, birth_year: int, rng: random.Random) -> int:
    """The simulator's next test duration for a customer, in whole seconds as the original.

    First test: 120 s minus 0-59 s. Then the 1950-1960 cohort gets 0-3 s slower
    each time (so its scores are <= 0, in steps of 0.5); everyone else 61-120 s.
    """
    if previous_ms is None:
        return (120 - rng.randint(0, 59)) * 1000
    if is_deteriorating(birth_year):
        return previous_ms + rng.randint(0, 3) * 1000
    return rng.randint(61, 120) * 1000
