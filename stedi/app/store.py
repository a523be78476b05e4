"""STEDI's entities in Redis, stored as the original app did: `ZADD <Entity> 0 <JSON>`.

Customer:      {"customerName","email","phone","birthDay"}
User:          {"userName","email","phone","birthDate","passwordHash"} (argon2id, never plain text)
RapidStepTest: {"startTime","stopTime","testTime","totalSteps","customer":{...}}
Every write goes through Redis replication, so the Redis source publishes it.

Beside them, the app's own keys (the Spark jobs ignore them):
CustomerOwner          hash: customer email -> the email of the user who owns it (HSETNX
                       claims an email once, for everyone)
CustomersOf:<user>     hash: customer email -> customer JSON, the user's own customers
Session:<sha256(id)>   string: the user of a login session, expiring with it; the cookie
                       holds the id, Redis only its hash
"""

from __future__ import annotations

import asyncio
import collections
import hashlib
import json
import secrets
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

import redis.asyncio as aioredis
from argon2 import PasswordHasher
from argon2.exceptions import VerificationError

from stedi.app import validation
from stedi.app.risk import TOTAL_STEPS, Risk, StepTest, risk_score
from stedi.app.validation import InvalidInput

CUSTOMER, USER, RAPID_STEP_TEST = "Customer", "User", "RapidStepTest"
CUSTOMER_OWNER = "CustomerOwner"
SAMPLE_CUSTOMER = {"customerName": "Sam Test", "email": "sam.test@test.com",
                   "phone": "8015551212", "birthDay": "2001-01-03"}  # fmt: skip
RECENT_TESTS = 10  # kept per customer in memory, for its page
_hasher = PasswordHasher()
# argon2 costs tens of milliseconds of CPU: never on the event loop, and two at a time at most.
_hashing = ThreadPoolExecutor(max_workers=2, thread_name_prefix="argon2")


def _dumps(entity: dict) -> str:
    return json.dumps(entity, separators=(",", ":"), ensure_ascii=False)


def customers_of(user: str) -> str:
    return f"CustomersOf:{user}"


def _session_key(session_id: str) -> str:
    return "Session:" + hashlib.sha256(session_id.encode()).hexdigest()


async def _off_loop(function, *args):
    return await asyncio.get_running_loop().run_in_executor(_hashing, function, *args)


@dataclass
class Store:
    client: aioredis.Redis
    # Tests (stop time, duration) per customer email: the risk score needs the last four.
    durations: dict[str, list[StepTest]] = field(default_factory=dict)
    recent: dict[str, collections.deque] = field(default_factory=dict)

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
        """Rebuild the per-customer durations from the stored tests (app restart)."""
        tests = sorted(await self._members(RAPID_STEP_TEST), key=lambda t: t.get("stopTime", 0))
        self.durations.clear()
        self.recent.clear()
        for test in tests:
            email = (test.get("customer") or {}).get("email")
            if (
                email
                and isinstance(test.get("stopTime"), int)
                and isinstance(test.get("testTime"), int)
            ):
                self._remember(email, test)

    def _remember(self, email: str, test: dict) -> None:
        self.durations.setdefault(email, []).append(StepTest(test["stopTime"], test["testTime"]))
        self.recent.setdefault(email, collections.deque(maxlen=RECENT_TESTS)).append(test)

    # --- customers: each belongs to one user ---------------------------------------------
    async def customers(self, owner: str) -> list[dict]:
        raw = await self.client.hvals(customers_of(owner))
        return sorted((json.loads(c) for c in raw), key=lambda c: c["customerName"])

    async def customer(self, owner: str, email: str) -> dict | None:
        """The owner's customer with this email; None also when it is someone else's."""
        raw = await self.client.hget(customers_of(owner), email)
        return None if raw is None else json.loads(raw)

    async def customer_emails(self) -> set[str]:
        """Every customer email taken, whoever owns it."""
        return {e.decode() for e in await self.client.hkeys(CUSTOMER_OWNER)}

    async def add_customer(self, owner: str, customer: dict) -> dict:
        if not await self.save_customers(owner, [customer]):
            raise InvalidInput(f"A customer with email {customer['email']} already exists.")
        return customer

    async def save_customers(self, owner: str, customers: list[dict]) -> list[dict]:
        """Claims each email for `owner` and stores the customers whose claim succeeded."""
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

    def recent_tests(self, email: str) -> list[dict]:
        """The customer's latest tests, newest first (from this app's memory)."""
        return list(reversed(self.recent.get(email, ())))

    # --- users --------------------------------------------------------------------------
    async def user(self, email: str) -> dict | None:
        return next((u for u in await self._members(USER) if u.get("email") == email), None)

    async def add_user(self, user_name: str, email: str, password: str, phone="", birth_date=""):
        """A new account from already validated fields (see validation.signup)."""
        if await self.user(email):
            raise InvalidInput("That email is already registered.")
        user = {
            "userName": user_name or email,
            "email": email,
            "phone": phone,
            "birthDate": birth_date,
            "passwordHash": await _off_loop(_hasher.hash, password),
        }
        await self.client.zadd(USER, {_dumps(user): 0})
        return user

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
        await self.client.set(_session_key(session_id), user, ex=seconds)
        return session_id

    async def session_user(self, session_id: str) -> str | None:
        user = await self.client.get(_session_key(session_id))
        return None if user is None else user.decode()

    async def end_session(self, session_id: str) -> None:
        await self.client.delete(_session_key(session_id))

    # --- rapid step tests -------------------------------------------------------------
    async def add_test(
        self, customer: dict, start_ms: int, stop_ms: int
    ) -> tuple[dict, Risk | None]:
        """Store a finished test; returns it and the customer's new risk (or None)."""
        if stop_ms <= start_ms:
            raise InvalidInput("A test must stop after it starts.")
        test = {
            "startTime": start_ms,
            "stopTime": stop_ms,
            "testTime": stop_ms - start_ms,
            "totalSteps": TOTAL_STEPS,
            "customer": customer,
        }
        await self.client.zadd(RAPID_STEP_TEST, {_dumps(test): 0})
        self._remember(customer["email"], test)
        return test, risk_score(self.durations[customer["email"]])

    async def ensure_keys(self, admin_email: str | None, admin_password: str | None) -> str | None:
        """`Customer` and `User` exist after start (the user's flow checks `keys *`); the
        sample customer Sam Test belongs to the admin.

        Returns a generated first-user password when it had to create one.
        """
        generated = None
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
            await self.save_customers(owner, [SAMPLE_CUSTOMER])
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
