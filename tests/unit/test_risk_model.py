"""The risk formula and the simulator's model (STEDI-SPEC.md)."""

import asyncio
import json
import random
from datetime import datetime, timezone

from stedi.app.risk import next_duration_ms, risk_event, risk_score
from stedi.app.simulator import CUSTOMERS_PER_ACTIVATION, Simulator, new_customers


def test_no_score_before_the_fourth_test():
    assert risk_score([]) is None
    assert risk_score([60000, 70000, 80000]) is None


def test_score_is_recent_pair_mean_minus_previous_pair_mean_in_seconds_rounded():
    assert risk_score([100000, 90000, 95000, 105000]) == 5.0
    assert risk_score([61000, 62000, 90001, 90002]) == 28.5  # 90.0015 - 61.5 -> 28.5
    assert risk_score([90000, 90000, 61000, 62000]) == -28.5
    assert risk_score([60000, 60000, 61236, 61238]) == 1.24  # 1.237 s
    assert risk_score([61236, 61238, 60000, 60000]) == -1.24


def test_only_the_four_most_recent_tests_count():
    assert risk_score([1, 1, 1, 1, 100000, 100000, 110000, 110000]) == 10.0


def test_risk_event_is_the_spec_record_keyed_by_publish_time():
    now = datetime(2020, 9, 14, 7, 54, 6, 417000, tzinfo=timezone.utc)
    key, value = risk_event("Jason.Mitra@test.com", 7.0, now)
    assert key == b"1600070046417"
    assert value == (
        b'{"customer":"Jason.Mitra@test.com","score":7.0,"riskDate":"2020-09-14T07:54:06.417Z"}'
    )


def test_simulated_customers_have_unique_test_emails_and_birth_years_one_apart_from_1965():
    existing = {"Sarah.Fibonnaci@test.com"}
    customers = new_customers(existing, random.Random(1))
    assert len(customers) == CUSTOMERS_PER_ACTIVATION
    emails = [c["email"] for c in customers]
    assert len(set(emails)) == 30 and "Sarah.Fibonnaci@test.com" not in emails
    assert all(e.endswith("@test.com") and e.count(".") == 2 for e in emails)
    assert [c["birthDay"] for c in customers] == [f"{1965 - i}-01-01" for i in range(30)]
    assert {c["phone"] for c in customers} == {"8015551212"}
    assert all(c["customerName"] == c["email"].split("@")[0].replace(".", " ") for c in customers)


def test_first_test_lasts_61_to_120_s_and_1950s_customers_only_get_slower():
    rng = random.Random(7)
    firsts = [next_duration_ms(None, 1970, rng) for _ in range(500)]
    assert min(firsts) >= 61000 and max(firsts) <= 120000
    duration = next_duration_ms(None, 1955, rng)
    for _ in range(50):
        following = next_duration_ms(duration, 1955, rng)
        assert 0 <= following - duration <= 3000
        duration = following
    others = [next_duration_ms(100000, 1964, rng) for _ in range(500)]
    assert min(others) >= 61000 and max(others) <= 120000 and len(set(others)) > 10


class FakeStore:
    def __init__(self):
        self.saved, self.tests = [], {}

    async def customer_emails(self):
        return set()

    async def save_customers(self, owner, customers):
        self.saved.extend(customers)
        return customers

    async def add_test(self, customer, start, stop):
        history = self.tests.setdefault(customer["email"], [])
        history.append(stop - start)
        return {}, risk_score(history)


def run_simulator(speed: float, tests: int):
    store, published, sleeps = FakeStore(), [], []
    simulator = Simulator(store, lambda email, score: published.append((email, score)), speed)

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


def test_simulator_scores_each_customer_from_its_fourth_test_on_in_turn():
    store, published, _ = run_simulator(speed=1, tests=5 * 30)
    assert len(store.saved) == 30
    # rounds 1-3: no score; round 4 and 5: one score per customer, in customer order
    emails = [c["email"] for c in store.saved]
    assert [email for email, _ in published] == emails + emails
    assert all(isinstance(score, float) for _, score in published)


def test_speed_factor_divides_the_two_seconds_between_tests():
    _, _, sleeps = run_simulator(speed=30, tests=10)
    assert set(sleeps) == {2 / 30}
    _, _, sleeps = run_simulator(speed=1, tests=3)
    assert set(sleeps) == {2.0}


def test_published_scores_parse_back_as_spec_json():
    _, published, _ = run_simulator(speed=1, tests=4 * 30)
    email, score = published[0]
    value = json.loads(risk_event(email, score)[1])
    assert value["customer"] == email and value["score"] == score
