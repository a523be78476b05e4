"""The app section's Redis, seeded in the app's own formats (stedi/app/store.py, docs/formats.md).

Users `bench.user<i>@test.com`, all with the password PASSWORD; customers Bench.Customer<i>
(bench/data.py), CUSTOMERS_PER_CAREGIVER to each of the first users; tests in turn, test j of
customer j % customers, 2 s of stop time apart, each with the score the app gives it. With
`older=True`, as the app wrote them before issue 35: UserEmail holds `1`, LatestTest no
recent tests, and no `Indexed` counts, so the app's start runs its index pass over them.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Iterator

import redis
from argon2 import PasswordHasher

from bench.data import bench_customer
from stedi.app.risk import StepTest, most_recent, risk_score
from stedi.app.store import (
    CUSTOMER,
    CUSTOMER_OWNER,
    INDEXED,
    LATEST_TEST,
    RAPID_STEP_TEST,
    USER,
    USER_EMAIL,
    customers_of,
    dumps,
    latest_value,
    test_field,
    test_row,
    tests_of,
)

PASSWORD = "bench password"
TESTS_PER_CUSTOMER = 50  # 1,000,000 tests: 20,000 customers
CUSTOMERS_PER_CAREGIVER = 20
TEST_INTERVAL_MS = 2000
CHUNK = 2000  # members or fields per command while seeding


def user_email(i: int) -> str:
    return f"bench.user{i}@test.com"


def customer_count(tests: int) -> int:
    return max(1, tests // TESTS_PER_CUSTOMER)


def caregivers(tests: int) -> int:
    """The users who own customers: the first ones."""
    return -(-customer_count(tests) // CUSTOMERS_PER_CAREGIVER)


def customers_of_caregiver(i: int, tests: int) -> list[dict]:
    first = i * CUSTOMERS_PER_CAREGIVER
    last = min(first + CUSTOMERS_PER_CAREGIVER, customer_count(tests))
    return [bench_customer(c) for c in range(first, last)]


def duration_ms(j: int) -> int:
    """Test j's duration: whole seconds over 61-120 s."""
    return (61 + (j * 7919) % 60) * 1000


def _chunks(items: list, size: int = CHUNK) -> Iterator[list]:
    for start in range(0, len(items), size):
        yield items[start : start + size]


def seed(client: redis.Redis, users: int, tests: int, now_ms: int, older: bool = False) -> None:
    """Writes the users, customers and tests (the Redis is expected empty)."""
    _seed_users(client, users, older)
    _seed_customers(client, tests, users, older)
    _seed_tests(client, tests, now_ms, older)


def _seed_users(client: redis.Redis, users: int, older: bool) -> None:
    password_hash = PasswordHasher().hash(PASSWORD)  # one hash for all: seeding takes seconds
    for start in range(0, users, CHUNK):
        members, emails = {}, {}
        for i in range(start, min(users, start + CHUNK)):
            email = user_email(i)
            member = dumps(
                {
                    "userName": f"Bench User{i}",
                    "email": email,
                    "phone": "",
                    "birthDate": "",
                    "passwordHash": password_hash,
                }
            )
            members[member], emails[email] = 0, "1" if older else member
        pipe = client.pipeline(transaction=False)
        pipe.zadd(USER, members).hset(USER_EMAIL, mapping=emails)
        pipe.execute()
    if not older:
        client.hset(INDEXED, USER, users)


def _seed_customers(client: redis.Redis, tests: int, users: int, older: bool) -> None:
    count = customer_count(tests)
    if caregivers(tests) > users:
        raise ValueError(f"{count:,} customers need {caregivers(tests):,} users, not {users:,}")
    pipe = client.pipeline(transaction=False)
    for i in range(caregivers(tests)):
        owned = {c["email"]: dumps(c) for c in customers_of_caregiver(i, tests)}
        pipe.hset(customers_of(user_email(i)), mapping=owned)
        pipe.hset(CUSTOMER_OWNER, mapping=dict.fromkeys(owned, user_email(i)))
        pipe.zadd(CUSTOMER, dict.fromkeys(owned.values(), 0))
    pipe.execute()
    if not older:
        client.hset(INDEXED, CUSTOMER, count)


def _seed_tests(client: redis.Redis, tests: int, now_ms: int, older: bool) -> None:
    count = customer_count(tests)
    customers = [bench_customer(c) for c in range(count)]
    recent: list[list[StepTest]] = [[] for _ in range(count)]
    first_stop = now_ms - tests * TEST_INTERVAL_MS
    for start in range(0, tests, CHUNK * 5):
        members: dict[str, int] = {}
        rows: dict[int, dict[str, str]] = {}
        for j in range(start, min(tests, start + CHUNK * 5)):
            c, stop = j % count, first_stop + j * TEST_INTERVAL_MS
            test = {
                "startTime": stop - duration_ms(j),
                "stopTime": stop,
                "testTime": duration_ms(j),
                "totalSteps": 30,
                "customer": customers[c],
            }
            recent[c] = most_recent([*recent[c], StepTest(stop, duration_ms(j))])
            members[dumps(test)] = 0
            rows.setdefault(c, {})[test_field(test)] = test_row(test, risk_score(recent[c]))
        pipe = client.pipeline(transaction=False)
        for chunk in _chunks(list(members)):
            pipe.zadd(RAPID_STEP_TEST, dict.fromkeys(chunk, 0))
        for c, fields in rows.items():
            pipe.hset(tests_of(customers[c]["email"]), mapping=fields)
        pipe.execute()
        if start % 200_000 == 0 and start:
            print(f"   {start:,} of {tests:,} tests seeded", file=sys.stderr, flush=True)
    latest = {
        customers[c]["email"]: _older_latest(r) if older else latest_value(r)
        for c, r in enumerate(recent)
        if r
    }
    pipe = client.pipeline(transaction=False)
    for chunk in _chunks(list(latest)):
        pipe.hset(LATEST_TEST, mapping={e: latest[e] for e in chunk})
    if not older:
        pipe.hset(INDEXED, RAPID_STEP_TEST, tests)
    pipe.execute()


def _older_latest(recent: list[StepTest]) -> str:
    """A LatestTest value as the app wrote it before it kept the recent tests."""
    value = json.loads(latest_value(recent))
    del value["recent"]
    return dumps(value)
