"""STEDI's entities in Redis, stored as the original app did: `ZADD <Entity> 0 <JSON>`.

Customer:      {"customerName","email","phone","birthDay"}
User:          {"userName","email","phone","birthDate","passwordHash"} (argon2id, never plain text)
RapidStepTest: {"startTime","stopTime","testTime","totalSteps","customer":{...}}
Every write goes through Redis replication, so the Redis source publishes it.

Beside them, the app's own keys (the Spark jobs ignore them). They are hashes, never
sorted sets or strings, so the Redis source (which publishes ZADD and SET only) keeps
them out of the `redis-server` topic:
CustomerOwner          hash: customer email -> the email of the user who owns it (HSETNX
                       claims an email once, for everyone)
CustomersOf:<user>     hash: customer email -> customer JSON, the user's own customers
UserEmail              hash: user email -> 1, claimed once with HSETNX (sign-ups are atomic)
Login:<sha256(id)>     hash: {user}, a login session, expiring with it; the cookie holds
                       the id, Redis only its hash
LoginsOf:<user>        hash: sha256(id) -> expiry (epoch s), the user's sessions
TestsOf:<customer>     hash: "<stopTime>:<startTime>" -> the test with the risk the app
                       computed when it stored it ({"startTime","stopTime","testTime",
                       "totalSteps","score","riskDate"}, times in epoch ms, score and
                       riskDate null before the 4th test): an index of `RapidStepTest`, so
                       one customer's page reads only that customer's tests
LatestTest             hash: customer email -> {"stopTime","score","riskDate"}, the last
                       test and the current risk, for the timer page's list
`RapidStepTest` is the store of record: the app's start indexes what the index lacks.
"""

from __future__ import annotations

import asyncio
import collections
import hashlib
import json
import secrets
import time
from dataclasses import dataclass, field

import redis.asyncio as aioredis
from argon2 import PasswordHasher
from argon2.exceptions import VerificationError

from stedi.app import validation
from stedi.app.hashing import BoundedPool
from stedi.app.risk import TOTAL_STEPS, Risk, StepTest, risk_after_each, risk_score
from stedi.app.validation import InvalidInput

CUSTOMER, USER, RAPID_STEP_TEST = "Customer", "User", "RapidStepTest"
CUSTOMER_OWNER, USER_EMAIL, LATEST_TEST = "CustomerOwner", "UserEmail", "LatestTest"
SAMPLE_CUSTOMER = {"customerName": "Sam Test", "email": "sam.test@test.com",
                   "phone": "8015551212", "birthDay": "2001-01-03"}  # fmt: skip
_hasher = PasswordHasher()
_hashing = BoundedPool()  # argon2 never on the event loop; a burst beyond its queue: Busy


class CustomerQuota(Exception):
    """A user would own more customers than STEDI_CUSTOMERS_PER_USER (HTTP 403)."""


def _dumps(entity: dict) -> str:
    return json.dumps(entity, separators=(",", ":"), ensure_ascii=False)


def customers_of(user: str) -> str:
    return f"CustomersOf:{user}"


def tests_of(customer_email: str) -> str:
    return f"TestsOf:{customer_email}"


def _test_field(test: dict) -> str:
    return f"{test['stopTime']}:{test['startTime']}"


def _test_row(test: dict, risk: Risk | None) -> str:
    """A TestsOf value: the test without its customer, with the risk computed when stored."""
    return _dumps(
        {
            "startTime": test["startTime"],
            "stopTime": test["stopTime"],
            "testTime": test["testTime"],
            "totalSteps": test.get("totalSteps"),
            "score": None if risk is None else risk.score,
            "riskDate": None if risk is None else risk.risk_date_ms,
        }
    )


def _latest(tests: list[StepTest]) -> str:
    """A LatestTest value from all of a customer's tests."""
    risk = risk_score(tests)
    return _dumps(
        {
            "stopTime": max(t.stop_ms for t in tests),
            "score": None if risk is None else risk.score,
            "riskDate": None if risk is None else risk.risk_date_ms,
        }
    )


def _loads_all(raw: list[bytes]) -> list[dict]:
    """The JSON objects among `raw`; anything else (someone else's data) is skipped."""
    found = []
    for value in raw:
        try:
            entity = json.loads(value)
        except ValueError:
            continue
        if isinstance(entity, dict):
            found.append(entity)
    return found


def _session_hash(session_id: str) -> str:
    return hashlib.sha256(session_id.encode()).hexdigest()


def _session_key(session_id: str) -> str:
    return "Login:" + _session_hash(session_id)


def logins_of(user: str) -> str:
    return f"LoginsOf:{user}"


async def _off_loop(function, *args):
    return await _hashing.run(function, *args)


@dataclass
class Store:
    client: aioredis.Redis
    # Tests (stop time, duration) per customer email: the risk score needs the last four.
    durations: dict[str, list[StepTest]] = field(default_factory=dict)
    customers_per_user: int = 5000
    # One customer write per owner at a time: the quota's count and the write are one step.
    owner_locks: collections.defaultdict = field(
        default_factory=lambda: collections.defaultdict(asyncio.Lock)
    )
    tests_stored: int = 0  # new tests since start, for /metrics

    async def ping(self) -> bool:
        return bool(await self.client.ping())

    async def _members(self, entity: str) -> list[dict]:
        members = []
        for raw in await self.client.zrange(entity, 0, -1):
            try:
                members.append(json.loads(raw))
            except ValueError:
                continue  # someone else's data in our key: skip it, never fail a page
        return members

    async def load_history(self) -> None:
        """Rebuild the per-customer durations from the stored tests (app restart), and index
        the tests that `TestsOf` and `LatestTest` lack (stored before the index existed, or
        a write the app did not finish)."""
        tests = sorted(await self._members(RAPID_STEP_TEST), key=lambda t: t.get("stopTime", 0))
        self.durations.clear()
        by_customer: dict[str, dict[str, dict]] = {}
        for test in tests:
            email = (test.get("customer") or {}).get("email")
            if (
                email
                and isinstance(test.get("startTime"), int)
                and isinstance(test.get("stopTime"), int)
                and isinstance(test.get("testTime"), int)
            ):
                self._remember(email, test)
                by_customer.setdefault(email, {}).setdefault(_test_field(test), test)
        await self._index_missing(by_customer)

    async def _index_missing(self, by_customer: dict[str, dict[str, dict]]) -> None:
        emails = list(by_customer)
        if not emails:
            return
        async with self.client.pipeline(transaction=False) as pipe:
            for email in emails:
                pipe.hlen(tests_of(email))
            pipe.hmget(LATEST_TEST, emails)
            *indexed, latest = await pipe.execute()
        for email, count, summary in zip(emails, indexed, latest, strict=True):
            tests = sorted(by_customer[email].values(), key=lambda t: t["stopTime"])
            if count >= len(tests) and summary is not None:
                continue
            # Each test's score as if stored in stop order; HSETNX keeps what the app stored.
            steps = [StepTest(t["stopTime"], t["testTime"]) for t in tests]
            async with self.client.pipeline(transaction=False) as pipe:
                for test, (_, risk) in zip(tests, risk_after_each(steps), strict=True):
                    pipe.hsetnx(tests_of(email), _test_field(test), _test_row(test, risk))
                pipe.hset(LATEST_TEST, email, _latest(self.durations[email]))
                await pipe.execute()

    def _remember(self, email: str, test: dict) -> None:
        self.durations.setdefault(email, []).append(StepTest(test["stopTime"], test["testTime"]))

    # --- customers: each belongs to one user ---------------------------------------------
    async def customers(self, owner: str) -> list[dict]:
        raw = await self.client.hvals(customers_of(owner))
        return sorted((json.loads(c) for c in raw), key=lambda c: c["customerName"])

    async def customer(self, owner: str, email: str) -> dict | None:
        """The owner's customer with this email; None also when it is someone else's."""
        raw = await self.client.hget(customers_of(owner), email)
        return None if raw is None else json.loads(raw)

    async def add_customer(self, owner: str, customer: dict) -> dict:
        if not await self.save_customers(owner, [customer]):
            raise InvalidInput(f"A customer with email {customer['email']} already exists.")
        return customer

    async def save_customers(
        self, owner: str, customers: list[dict], quota: bool = True
    ) -> list[dict]:
        """Claims each email for `owner` and stores the customers whose claim succeeded;
        CustomerQuota when the owner would own more than the quota (unless quota=False)."""
        async with self.owner_locks[owner]:
            owned = await self.client.hlen(customers_of(owner))
            if quota and owned + len(customers) > self.customers_per_user:
                raise CustomerQuota(
                    f"You have {owned} customers; one user may have at most "
                    f"{self.customers_per_user}."
                )
            return await self._claim_customers(owner, customers)

    async def _claim_customers(self, owner: str, customers: list[dict]) -> list[dict]:
        async with self.client.pipeline(transaction=False) as pipe:
            for c in customers:
                pipe.hsetnx(CUSTOMER_OWNER, c["email"], owner)
            claimed = await pipe.execute()
        saved = [c for c, ok in zip(customers, claimed, strict=True) if ok]
        if saved:
            own = {c["email"]: _dumps(c) for c in saved}
            await self.client.hset(customers_of(owner), mapping=own)
            await self.client.zadd(CUSTOMER, {_dumps(c): 0 for c in saved})
        return saved

    async def customer_tests(self, email: str) -> list[dict]:
        """The customer's tests from TestsOf, newest first: one read, of this customer's
        tests only, however many tests the others have."""
        rows = [
            row
            for row in _loads_all(await self.client.hvals(tests_of(email)))
            if all(isinstance(row.get(f), int) for f in ("startTime", "stopTime", "testTime"))
        ]
        return sorted(rows, key=lambda t: (t["stopTime"], t["startTime"]), reverse=True)

    async def latest_tests(self, emails: list[str]) -> dict[str, dict]:
        """LatestTest of these customers (those tested at least once), in one read."""
        if not emails:
            return {}
        found = await self.client.hmget(LATEST_TEST, emails)
        return {e: json.loads(v) for e, v in zip(emails, found, strict=True) if v is not None}

    # --- users --------------------------------------------------------------------------
    async def user(self, email: str) -> dict | None:
        return next((u for u in await self._members(USER) if u.get("email") == email), None)

    async def add_user(
        self, user_name: str, email: str, password: str, phone="", birth_date=""
    ) -> bool:
        """A new account from already validated fields (see validation.signup); False when
        the email is taken. Both cost one argon2 hash, so the time does not tell them apart."""
        password_hash = await _off_loop(_hasher.hash, password)
        if not await self.client.hsetnx(USER_EMAIL, email, 1):  # one claim per email, ever
            return False
        user = {
            "userName": user_name or email,
            "email": email,
            "phone": phone,
            "birthDate": birth_date,
            "passwordHash": password_hash,
        }
        await self.client.zadd(USER, {_dumps(user): 0})
        return True

    async def claim_user_emails(self) -> None:
        """UserEmail follows `User` (app start): users stored before it existed claim their
        emails, and claims of users no longer in `User` go."""
        users = [u for u in await self._members(USER) if isinstance(u, dict)]
        emails = {u["email"] for u in users if isinstance(u.get("email"), str)}
        stale = {e.decode() for e in await self.client.hkeys(USER_EMAIL)} - emails
        if stale:
            await self.client.hdel(USER_EMAIL, *stale)
        if emails:
            await self.client.hset(USER_EMAIL, mapping=dict.fromkeys(emails, 1))

    async def check_password(self, email: str, password: str) -> bool:
        user = await self.user(email)
        if user is None:
            await _off_loop(_hasher.hash, password)  # same cost whether or not the user exists
            return False
        try:
            return await _off_loop(_hasher.verify, user["passwordHash"], password)
        except (VerificationError, KeyError):
            return False

    # --- login sessions -------------------------------------------------------------------
    async def new_session(self, user: str, seconds: int) -> str:
        session_id = secrets.token_urlsafe(32)
        key, expires = _session_key(session_id), int(time.time()) + seconds
        async with self.client.pipeline(transaction=False) as pipe:
            pipe.hset(key, "user", user).expire(key, seconds)
            pipe.hset(logins_of(user), _session_hash(session_id), expires)
            pipe.expire(logins_of(user), seconds)
            await pipe.execute()
        return session_id

    async def session_user(self, session_id: str) -> str | None:
        user = await self.client.hget(_session_key(session_id), "user")
        return None if user is None else user.decode()

    async def end_session(self, session_id: str) -> str | None:
        """Ends a login session; returns its user (None if it had ended already)."""
        user = await self.session_user(session_id)
        await self.client.delete(_session_key(session_id))
        if user is not None:
            await self.client.hdel(logins_of(user), _session_hash(session_id))
        return user

    async def has_session(self, user: str) -> bool:
        """Whether any login session of the user is still alive; forgets expired ones."""
        logins = await self.client.hgetall(logins_of(user))
        now = time.time()
        expired = [h for h, expires in logins.items() if int(expires) <= now]
        if expired:
            await self.client.hdel(logins_of(user), *expired)
        return len(expired) < len(logins)

    # --- rapid step tests -------------------------------------------------------------
    async def add_test(
        self, customer: dict, start_ms: int, stop_ms: int
    ) -> tuple[dict, Risk | None, bool]:
        """Store a finished test; returns it, the customer's risk (or None) and whether it
        is new. The same test again (customer, start, stop) is the same member of the
        sorted set: stored once, remembered once, so memory and Redis agree."""
        if stop_ms <= start_ms:
            raise InvalidInput("A test must stop after it starts.")
        test = {
            "startTime": start_ms,
            "stopTime": stop_ms,
            "testTime": stop_ms - start_ms,
            "totalSteps": TOTAL_STEPS,
            "customer": customer,
        }
        email = customer["email"]
        added = await self.client.zadd(RAPID_STEP_TEST, {_dumps(test): 0})
        if added:
            self._remember(email, test)
            self.tests_stored += 1
        risk = risk_score(self.durations.get(email, ()))
        # Also when the test was there already: a retry after a failed index write.
        async with self.client.pipeline(transaction=False) as pipe:
            pipe.hsetnx(tests_of(email), _test_field(test), _test_row(test, risk))
            if email in self.durations:
                pipe.hset(LATEST_TEST, email, _latest(self.durations[email]))
            await pipe.execute()
        return test, risk, bool(added)

    async def ensure_keys(self, admin_email: str | None, admin_password: str | None) -> str | None:
        """`Customer` and `User` exist after start (the user's flow checks `keys *`); the
        sample customer Sam Test belongs to the admin.

        Returns a generated first-user password when it had to create one.
        """
        generated = None
        await self.claim_user_emails()
        if admin_email and admin_password and not await self.user(admin_email):
            await self.add_user("admin", admin_email, validation.password(admin_password))
        if not await self.client.exists(USER):
            generated = secrets.token_urlsafe(12)
            await self.add_user("admin", "admin@stedi.test", generated)
        # The sample customer goes to the configured admin, else to a first admin made now.
        owner = admin_email if admin_email and admin_password else None
        if owner is None and (generated or not await self.client.exists(CUSTOMER)):
            owner = "admin@stedi.test"
        if owner and not await self.client.hexists(CUSTOMER_OWNER, SAMPLE_CUSTOMER["email"]):
            await self.save_customers(owner, [SAMPLE_CUSTOMER], quota=False)
        await self.adopt_unowned_customers(owner or admin_email or "admin@stedi.test")
        return generated

    async def adopt_unowned_customers(self, owner: str) -> int:
        """Customers stored before customers had owners go to `owner`, so that their emails
        count as taken: a new customer under a known email would get another birth year than
        the one the Spark join already holds for it."""
        owned = {e.decode() for e in await self.client.hkeys(CUSTOMER_OWNER)}
        unowned = {}
        for customer in await self._members(CUSTOMER):
            email = customer.get("email") if isinstance(customer, dict) else None
            if isinstance(email, str) and email not in owned:
                unowned.setdefault(email, customer)
        if not unowned:
            return 0
        async with self.client.pipeline(transaction=False) as pipe:
            for email, customer in unowned.items():
                pipe.hsetnx(CUSTOMER_OWNER, email, owner)
                pipe.hset(customers_of(owner), email, _dumps(customer))
            await pipe.execute()
        return len(unowned)
