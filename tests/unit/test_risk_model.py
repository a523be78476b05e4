"""The risk formula and the simulator's model, as the original STEDI app (docs/formats.md)."""

import asyncio
import itertools
import json
import logging
import math
import random
import re
from datetime import datetime, timezone

import pytest

from stedi.app.risk import (
    STEADY_SECONDS,
    Risk,
    StepTest,
    next_duration_ms,
    risk_after_each,
    risk_event,
    risk_score,
    trend,
)
from stedi.app.simulator import CUSTOMERS_PER_ACTIVATION, Simulator, new_customers


def in_order(*durations_ms: int) -> list[StepTest]:
    """Tests one minute apart, oldest first, with these durations."""
    return [StepTest(1_600_000_000_000 + i * 60_000, d) for i, d in enumerate(durations_ms)]


def score(*durations_ms: int) -> float | None:
    risk = risk_score(in_order(*durations_ms))
    return None if risk is None else risk.score


def test_no_score_before_the_fourth_test():
    assert score() is None
    assert score(60000, 70000, 80000) is None


def test_score_is_previous_pair_mean_minus_recent_pair_mean_in_seconds():
    assert score(100000, 90000, 95000, 105000) == -5.0  # slower lately: deteriorated
    assert score(90000, 90000, 61000, 62000) == 28.5  # faster lately: improved
    assert score(61000, 62000, 90001, 90002) == -28.5  # -28.5015 s
    assert score(60000, 60000, 61236, 61238) == -1.24  # -1.237 s


@pytest.mark.parametrize(
    ("durations", "expected", "float_round"),
    [
        ((61010, 61000, 60000, 60000), 1.01, 1.0),  # 1.005 s: float round gives 1.0
        ((60000, 60000, 61010, 61000), -1.01, -1.0),  # -1.005 s: half away from zero
        ((62675, 62675, 60000, 60000), 2.68, 2.67),  # 2.675 s
        ((60125, 60125, 60000, 60000), 0.13, 0.12),  # 0.125 s: not to even
        ((60000, 60000, 60005, 60005), -0.01, -0.01),  # -0.005 s
    ],
)
def test_scores_round_half_up_in_decimal_arithmetic(durations, expected, float_round):
    a, b, c, d = durations
    assert round(((a + b) / 2 - (c + d) / 2) / 1000, 2) == float_round  # what float gives
    assert score(*durations) == expected


def test_a_score_that_rounds_to_zero_is_never_negative_zero():
    for durations in [(60000, 60000, 60004, 60004), (60000, 60000, 60000, 60000)]:
        value = score(*durations)  # -0.004 s, then exactly 0
        assert value == 0.0 and math.copysign(1, value) == 1.0
        _, event = risk_event("a@test.com", risk_score(in_order(*durations)))
        assert b'"score":0.0,' in event and b"-0.0" not in event


def test_only_the_four_most_recent_tests_by_stop_time_count_in_any_arrival_order():
    tests = in_order(1, 1, 1, 1, 110000, 110000, 100000, 100000)
    shuffled = tests[:]
    random.Random(3).shuffle(shuffled)
    assert shuffled != tests
    assert risk_score(shuffled) == risk_score(tests) == Risk(10.0, tests[-1].stop_ms)


def test_each_test_gets_the_score_of_the_tests_up_to_it_in_stop_order():
    tests = in_order(100000, 90000, 95000, 105000, 60000, 71500)
    shuffled = tests[::-1]
    replayed = risk_after_each(shuffled)
    assert [t for t, _ in replayed] == tests
    assert [r for _, r in replayed] == [risk_score(tests[: i + 1]) for i in range(6)]
    assert [None if r is None else r.score for _, r in replayed] == [
        None, None, None, -5.0, 10.0, 34.25
    ]  # fmt: skip


@pytest.mark.parametrize(
    ("score_s", "label"),
    [(34.25, "improved"), (1.01, "improved"), (1.0, "steady"), (0.0, "steady"),
     (-1.0, "steady"), (-1.01, "deteriorated"), (-5.0, "deteriorated")],
)  # fmt: skip
def test_within_one_second_either_way_is_steady(score_s, label):
    assert STEADY_SECONDS == 1.0  # the threshold docs/formats.md states
    assert trend(score_s) == label


def test_risk_date_is_the_stop_time_of_the_most_recent_test():
    latest = StepTest(1_600_070_046_417, 95_000)  # 2020-09-14T07:54:06.417Z
    earlier = [StepTest(1_600_070_000_000 - i * 60_000, 90_000) for i in range(3)]
    risk = risk_score([latest, *earlier])
    assert risk == Risk(-2.5, 1_600_070_046_417)
    publish_time = datetime(2020, 9, 14, 8, 0, 0, 5000, tzinfo=timezone.utc)
    key, value = risk_event("Jason.Mitra@test.com", risk, publish_time)
    assert key == b"1600070400005"  # the publish time in epoch ms, as a string
    assert value == (
        b'{"customer":"Jason.Mitra@test.com","score":-2.5,"riskDate":"2020-09-14T07:54:06.417Z"}'
    )


def test_simulated_customers_have_unique_test_emails_and_birth_years_one_apart_from_1965():
    existing = {"Sarah.Fibonnaci@test.com"}
    customers = new_customers(existing, random.Random(1))
    assert len(customers) == CUSTOMERS_PER_ACTIVATION == 30
    emails = [c["email"] for c in customers]
    assert len(set(emails)) == 30 and "Sarah.Fibonnaci@test.com" not in emails
    assert all(e.endswith("@test.com") and e.count(".") == 2 for e in emails)
    assert [c["birthDay"] for c in customers] == [f"{1965 - i}-01-01" for i in range(30)]
    assert {c["phone"] for c in customers} == {"8015551212"}
    assert all(c["customerName"] == c["email"].split("@")[0].replace(".", " ") for c in customers)


def test_the_first_test_lasts_120_s_minus_0_to_59_whole_seconds():
    rng = random.Random(7)
    firsts = {next_duration_ms(None, year, rng) for year in (1940, 1955, 1965) for _ in range(2000)}
    assert firsts == {(120 - s) * 1000 for s in range(60)}


def test_the_1950_to_1960_cohort_gets_0_to_3_whole_seconds_slower_each_test():
    rng = random.Random(7)
    for birth_year in (1950, 1955, 1960):
        steps = set()
        duration = next_duration_ms(None, birth_year, rng)
        for _ in range(200):
            following = next_duration_ms(duration, birth_year, rng)
            steps.add(following - duration)
            duration = following
        assert steps == {0, 1000, 2000, 3000}


def test_everyone_else_gets_a_fresh_61_to_120_whole_seconds():
    rng = random.Random(7)
    for birth_year in (1949, 1961, 1965):
        durations = {next_duration_ms(150_000, birth_year, rng) for _ in range(3000)}
        assert durations == {s * 1000 for s in range(61, 121)}


def test_the_cohort_scores_are_zero_or_below_in_steps_of_half_a_second():
    rng = random.Random(11)
    scores = []
    for birth_year in range(1950, 1961):
        tests, duration = [], None
        for minute in range(40):
            duration = next_duration_ms(duration, birth_year, rng)
            tests.append(StepTest(minute * 60_000, duration))
            risk = risk_score(tests)
            if risk is not None:
                scores.append(risk.score)
    assert len(scores) == 11 * 37
    assert all(s <= 0 and (s * 2).is_integer() for s in scores)
    assert all(math.copysign(1, s) == 1.0 for s in scores if s == 0)
    assert min(scores) < -1 and 0.0 in scores  # both ends of 0-3 s occur


class FakeStore:
    """The Store's test bookkeeping without Redis; records the simulated time of each test."""

    def __init__(self, clock):
        self.saved, self.tests, self.clock, self.test_times = [], {}, clock, []

    async def save_customers(self, owner, customers, quota=True):
        self.saved.extend(customers)
        return customers

    async def add_test(self, customer, start, stop):
        self.test_times.append((customer["email"], self.clock()))
        history = self.tests.setdefault(customer["email"], [])
        history.append(StepTest(stop, stop - start))
        return {}, risk_score(history), True


def run_simulator(speed: float, tests: int):
    """Runs the simulator for `tests` tests; sleeps are counted, not waited."""
    sleeps = []
    store = FakeStore(lambda: sum(sleeps) * speed)  # simulated seconds since activation
    published = []
    simulator = Simulator(store, lambda email, risk: published.append((email, risk)), speed)

    async def fake_sleep(seconds):
        sleeps.append(seconds)
        if len(sleeps) > tests:
            raise asyncio.CancelledError

    simulator.sleep = fake_sleep

    async def main():
        simulator.start()
        try:
            await simulator.task
        except asyncio.CancelledError:
            pass

    asyncio.run(main())
    return store, published, sleeps


def test_each_activation_creates_30_customers_scored_from_their_fourth_test_on_in_turn():
    store, published, _ = run_simulator(speed=1, tests=5 * 30)
    assert len(store.saved) == 30
    # rounds 1-3: no score; round 4 and 5: one score per customer, in customer order
    emails = [c["email"] for c in store.saved]
    assert [email for email, _ in published] == emails + emails
    assert all(isinstance(risk, Risk) for _, risk in published)


def test_each_customer_gets_one_test_per_simulated_minute():
    store, _, _ = run_simulator(speed=1, tests=3 * 30)
    times: dict[str, list[float]] = {}
    for email, at in store.test_times:
        times.setdefault(email, []).append(at)
    assert len(times) == 30
    for at in times.values():
        assert [round(b - a, 6) for a, b in itertools.pairwise(at)] == [60.0, 60.0]


def test_speed_factor_divides_the_two_seconds_between_tests():
    _, _, sleeps = run_simulator(speed=30, tests=10)
    assert set(sleeps) == {2 / 30}
    _, _, sleeps = run_simulator(speed=1, tests=3)
    assert set(sleeps) == {2.0}


def test_published_events_are_spec_json_dated_by_the_latest_test():
    store, published, _ = run_simulator(speed=1, tests=4 * 30)
    email, risk = published[0]
    value = json.loads(risk_event(email, risk)[1])
    assert set(value) == {"customer", "score", "riskDate"}
    assert value["customer"] == email and value["score"] == risk.score
    latest_stop = max(t.stop_ms for t in store.tests[email])
    latest = datetime.fromtimestamp(latest_stop / 1000, timezone.utc)
    assert value["riskDate"] == latest.isoformat(timespec="milliseconds").replace("+00:00", "Z")


def test_the_simulator_logs_its_progress_about_every_two_seconds_of_real_time(caplog):
    with caplog.at_level(logging.INFO, logger="stedi.app.simulator"):
        run_simulator(speed=1, tests=4 * 30)
    lines = [r.getMessage() for r in caplog.records]
    assert any(line.startswith("created 30 customers") for line in lines)
    tests = [line for line in lines if line.startswith("test ")]
    assert len(tests) == 4 * 30  # one per test at real speed: one every 2 s
    assert tests[0].endswith("risk score none yet")
    assert re.search(r"@test\.com \(born \d{4}\) took \d+ s, risk score -?\d+\.\d+$", tests[-1])
    caplog.clear()
    with caplog.at_level(logging.INFO, logger="stedi.app.simulator"):
        run_simulator(speed=30, tests=4 * 30)
    assert len([r for r in caplog.records if r.getMessage().startswith("test ")]) == 4
