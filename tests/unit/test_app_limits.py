"""The app's limits, pure: input validation, login counters, simulator names, live streams."""

import asyncio
import json
import random
import re
import threading
from datetime import date
from types import SimpleNamespace

import fakeredis
import pytest
from redis.exceptions import RedisError

from stedi.app import store as store_module
from stedi.app import validation
from stedi.app.kafka_io import RiskFeed
from stedi.app.risk import Risk
from stedi.app.simulator import (
    CUSTOMERS_PER_ACTIVATION,
    FIRST_NAMES,
    LAST_NAMES,
    Simulator,
    new_customers,
    unused_email,
)
from stedi.app.store import Store
from stedi.app.validation import InvalidInput

TODAY = date(2026, 6, 1)
NOW_MS = 1_780_000_000_000
GOOD = {"customerName": "Ann Lee", "email": "ann@test.com", "phone": "801 555-1212",
        "birthDay": "1950-02-03"}  # fmt: skip


def test_a_valid_customer_is_returned_with_only_its_four_fields():
    assert validation.customer({**GOOD, "extra": "x", "customerName": " Ann Lee "}, TODAY) == GOOD


@pytest.mark.parametrize(
    ("field", "value", "message"),
    [
        ("customerName", "x" * 101, "too long"),
        ("customerName", "Ann\nLee", "not allowed"),
        ("customerName", "Ann\ud800", "not allowed"),
        ("customerName", "", "required"),
        ("customerName", 12, "must be text"),
        ("email", "no-at-sign", "name@example.com"),
        ("email", "a" * 250 + "@x.com", "too long"),
        ("phone", "call me", "digits"),
        ("birthDay", "2026-06-02", "between 1900-01-01 and today"),
        ("birthDay", "1899-12-31", "between 1900-01-01 and today"),
        ("birthDay", "03/02/1960", "YYYY-MM-DD"),
        ("birthDay", "19600203", "YYYY-MM-DD"),
        ("birthDay", "1960-02-30", "YYYY-MM-DD"),
    ],
)
def test_each_bad_customer_field_is_refused_with_a_message_naming_it(field, value, message):
    with pytest.raises(InvalidInput, match=message):
        validation.customer({**GOOD, field: value}, TODAY)


def a_test(start_offset_ms: int, duration_ms: int, **extra) -> dict:
    start = NOW_MS + start_offset_ms
    return {"startTime": start, "stopTime": start + duration_ms, "totalSteps": 30, **extra}


def test_a_plausible_test_gives_its_start_and_stop():
    assert validation.test_times(a_test(-90_000, 60_000), NOW_MS) == (NOW_MS - 90_000,
                                                                      NOW_MS - 30_000)  # fmt: skip


@pytest.mark.parametrize(
    ("body", "message"),
    [
        (a_test(-90_000, 60_000, totalSteps=12), "exactly 30 steps"),
        (a_test(-90_000, 60_000, totalSteps=True), "exactly 30 steps"),
        ({**a_test(0, 0), "startTime": 10**400}, "within the last 7 days"),
        ({**a_test(-90_000, 60_000), "startTime": float("inf")}, "whole epoch milliseconds"),
        ({**a_test(-90_000, 60_000), "stopTime": "1780000000000"}, "whole epoch milliseconds"),
        ({**a_test(-90_000, 60_000), "stopTime": True}, "whole epoch milliseconds"),
        ({"totalSteps": 30}, "whole epoch milliseconds"),
        (a_test(-8 * 24 * 3600 * 1000, 60_000), "within the last 7 days"),
        (a_test(3600_000, 60_000), "within the last 7 days"),
        (a_test(-90_000, -1000), "stop after it starts"),
        (a_test(-90_000, 500), "between 1 second and 1 hour"),
        (a_test(-2 * 3600_000, 3600_001), "between 1 second and 1 hour"),
    ],
)
def test_implausible_test_times_are_refused(body, message):
    with pytest.raises(InvalidInput, match=message):
        validation.test_times(body, NOW_MS)


@pytest.mark.parametrize(
    ("raw", "message"),
    [
        (b'{"a": NaN}', "finite"),
        (b'{"a": -Infinity}', "finite"),
        (b'{"a": 1e999}', "finite"),
        (b"[1, 2]", "JSON object"),
        (b"{not json", "must be JSON"),
        (b"\xff\xfe{}", "must be JSON"),
        (b"[" * 5000 + b"]" * 5000, "must be JSON"),
        (b'{"a": ' + b"9" * 5000 + b"}", "must be JSON"),
    ],
)
def test_bodies_that_are_not_a_finite_json_object_are_refused(raw, message):
    with pytest.raises(InvalidInput, match=message):
        validation.json_object(raw)


def test_signup_fields_have_limits():
    assert validation.signup({"userName": "Lee", "email": "l@x.io", "password": "p" * 8}) == (
        "Lee", "l@x.io", "p" * 8)  # fmt: skip
    for fields, message in [
        ({"userName": "x" * 400_000, "email": "l@x.io", "password": "p" * 8}, "too long"),
        ({"userName": "Lee", "email": "l@x.io", "password": "short"}, "8 to 256"),
        ({"userName": "Lee", "email": "l@x.io", "password": "p" * 257}, "8 to 256"),
        ({"userName": "Lee", "email": "nope", "password": "p" * 8}, "name@example.com"),
    ]:
        with pytest.raises(InvalidInput, match=message):
            validation.signup(fields)


def test_simulated_emails_never_run_out_once_every_pool_name_is_taken():
    taken = {f"{f}.{l}@test.com" for f in FIRST_NAMES for l in LAST_NAMES}  # noqa: E741
    taken |= {f"Sarah.Mitra{n}@test.com" for n in range(2, 500)}
    assert len(taken) > 1500
    rng = random.Random(3)
    email = unused_email("Sarah", "Mitra", taken, rng)
    assert re.fullmatch(r"Sarah\.Mitra\d+@test\.com", email) and email not in taken
    emails = []
    for _ in range(40):  # 1,200 more customers than the pools hold
        emails += [c["email"] for c in new_customers(taken, rng)]
    assert len(emails) == len(set(emails)) == 40 * CUSTOMERS_PER_ACTIVATION
    assert all(e in taken for e in emails)  # each one is marked taken for the next


def test_a_stream_that_falls_behind_is_ended_and_others_keep_their_points():
    async def scenario():
        feed = RiskFeed("unused:9092", "unused", stream_buffer=2)
        slow, live = feed.subscribe("session-a"), feed.subscribe("session-b")
        for score in (1.0, 2.0):
            feed._deliver({"birthYear": 1950, "score": score})
        assert await live.next(1) == {"birthYear": 1950, "score": 1.0}
        feed._deliver({"birthYear": 1950, "score": 3.0})  # the slow one is now too far behind
        assert await slow.next(1) is None  # ended at once, its stale points dropped
        assert slow not in feed.streams and live in feed.streams
        assert [await live.next(1) for _ in range(2)] == [
            {"birthYear": 1950, "score": 2.0},
            {"birthYear": 1950, "score": 3.0},
        ]

    asyncio.run(scenario())


def test_ending_a_session_ends_only_its_streams():
    async def scenario():
        feed = RiskFeed("unused:9092", "unused")
        mine, other = feed.subscribe("mine"), feed.subscribe("other")
        feed.end_session("mine")
        assert await mine.next(1) is None
        feed._deliver({"birthYear": 1960, "score": 0.5})
        assert await other.next(1) == {"birthYear": 1960, "score": 0.5}

    asyncio.run(scenario())


def test_password_hashing_runs_off_the_event_loop(monkeypatch):
    threads = []
    hasher = store_module._hasher
    user = {"email": "u@test.com", "passwordHash": hasher.hash("right password")}

    def recording(function):
        def run(*args):
            threads.append(threading.current_thread().name)
            return function(*args)

        return run

    monkeypatch.setattr(store_module, "_hasher", SimpleNamespace(
        hash=recording(hasher.hash), verify=recording(hasher.verify)))  # fmt: skip
    store = Store(fakeredis.FakeAsyncRedis())
    asyncio.run(store.client.hset("UserEmail", "u@test.com", json.dumps(user)))

    async def scenario():
        return [
            await store.check_password("u@test.com", "right password"),
            await store.check_password("nobody@test.com", "any password"),
        ]

    assert asyncio.run(scenario()) == [True, False]
    assert len(threads) == 2 and all(name.startswith("argon2") for name in threads)
    assert threading.main_thread().name not in threads


class SlowStore:
    """A store whose test write takes a while, to stop the simulator in the middle of it."""

    def __init__(self):
        self.writing, self.written = asyncio.Event(), []

    async def save_customers(self, owner, customers, quota=True):
        return customers[:1]

    async def add_test(self, customer, start, stop):
        self.writing.set()
        await self.write()
        self.written.append(customer["email"])
        return {}, Risk(score=1.5, risk_date_ms=1_796_000_000_000), True

    async def write(self):
        """The write itself, after the simulator sees it started."""
        await asyncio.sleep(0.05)


def test_stopping_the_simulator_returns_after_the_test_in_progress_is_stored_and_published():
    # The app flushes its publisher right after the stop: a score published later was lost
    # while its test stayed in Redis (Spark then computed a score the app never sent).
    published = []

    async def scenario():
        store = SlowStore()
        simulator = Simulator(store, lambda email, risk: published.append(email), speed=1000)
        await simulator.activate()
        await store.writing.wait()
        await simulator.stop()
        assert not simulator.running
        return list(store.written), list(published)

    written, published_at_stop = asyncio.run(scenario())
    assert len(written) == 1
    assert published_at_stop == written


class FailingStore(SlowStore):
    async def write(self):
        await asyncio.sleep(0.05)
        raise RedisError("Connection reset by peer")


def test_a_test_write_failing_during_the_stop_is_reported_not_lost_silently():
    async def scenario():
        store = FailingStore()
        simulator = Simulator(store, lambda email, risk: None, speed=1000)
        await simulator.activate()
        await store.writing.wait()
        await simulator.stop()
        return simulator.error, simulator.in_flight

    error, in_flight = asyncio.run(scenario())
    assert error == "simulator: Connection reset by peer" and in_flight is None


class GatedStore(SlowStore):
    """A test write that ends only once `release` is set."""

    def __init__(self):
        super().__init__()
        self.release = asyncio.Event()

    async def write(self):
        await self.release.wait()


def test_a_second_stop_waits_for_the_write_a_cancelled_first_stop_left_running():
    published = []

    async def scenario():
        store = GatedStore()
        simulator = Simulator(store, lambda email, risk: published.append(email), speed=1000)
        await simulator.activate()
        await store.writing.wait()
        first = asyncio.create_task(simulator.stop())
        while simulator.running:  # the first stop ends the simulation, then waits for the write
            await asyncio.sleep(0)
        first.cancel()
        await asyncio.wait([first])
        second = asyncio.create_task(simulator.stop())
        store.release.set()
        await second
        return list(store.written), list(published)

    written, published_at_stop = asyncio.run(scenario())
    assert written == published_at_stop and len(written) == 1
