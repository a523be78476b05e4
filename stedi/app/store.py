"""STEDI's entities in Redis, stored as the original app did: `ZADD <Entity> 0 <JSON>`.

Customer:      {"customerName","email","phone","birthDay"}
User:          {"userName","email","phone","birthDate","passwordHash"} (argon2id, never plain text)
RapidStepTest: {"startTime","stopTime","testTime","totalSteps","customer":{...}}
Every write goes through Redis replication, so the Redis source publishes it.
"""

from __future__ import annotations

import json
import re
import secrets
from dataclasses import dataclass, field
from datetime import date

import redis.asyncio as aioredis
from argon2 import PasswordHasher
from argon2.exceptions import VerificationError

from stedi.app.risk import TOTAL_STEPS, Risk, StepTest, risk_score

CUSTOMER, USER, RAPID_STEP_TEST = "Customer", "User", "RapidStepTest"
EMAIL = re.compile(r"^[^@\s]+@[^@\s]+\.[^@\s]+$")
PHONE = re.compile(r"^[0-9+\-() ]{7,20}$")
_hasher = PasswordHasher()


class InvalidInput(ValueError):
    """Form or API input that is refused, with a message for the user."""


def _dumps(entity: dict) -> str:
    return json.dumps(entity, separators=(",", ":"), ensure_ascii=False)


def validate_customer(name: str, email: str, phone: str, birth_day: str) -> dict:
    name, email, phone, birth_day = (v.strip() for v in (name, email, phone, birth_day))
    if not name or len(name) > 100:
        raise InvalidInput("Name is required (at most 100 characters).")
    if not EMAIL.match(email) or len(email) > 200:
        raise InvalidInput("Email must look like name@example.com.")
    if not PHONE.match(phone):
        raise InvalidInput("Phone must be 7 to 20 digits.")
    try:
        born = date.fromisoformat(birth_day)
    except ValueError:
        raise InvalidInput("Birth day must be a date (YYYY-MM-DD).") from None
    if not 1900 <= born.year <= date.today().year:
        raise InvalidInput("Birth day must be between 1900 and today.")
    return {"customerName": name, "email": email, "phone": phone, "birthDay": born.isoformat()}


@dataclass
class Store:
    client: aioredis.Redis
    # Tests (stop time, duration) per customer email: the risk score needs the last four.
    durations: dict[str, list[StepTest]] = field(default_factory=dict)

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
        for test in tests:
            email = (test.get("customer") or {}).get("email")
            stop, duration = test.get("stopTime"), test.get("testTime")
            if email and isinstance(stop, int) and isinstance(duration, int):
                self.durations.setdefault(email, []).append(StepTest(stop, duration))

    # --- customers ----------------------------------------------------------------------
    async def customers(self) -> list[dict]:
        unique = {c["email"]: c for c in await self._members(CUSTOMER) if "email" in c}
        return sorted(unique.values(), key=lambda c: c.get("customerName", ""))

    async def customer(self, email: str) -> dict | None:
        return next((c for c in await self.customers() if c["email"] == email), None)

    async def add_customer(self, customer: dict) -> dict:
        if await self.customer(customer["email"]):
            raise InvalidInput(f"A customer with email {customer['email']} already exists.")
        await self.client.zadd(CUSTOMER, {_dumps(customer): 0})
        return customer

    async def save_customers(self, customers: list[dict]) -> None:
        """Store new customers as they are (the simulator's, already unique)."""
        await self.client.zadd(CUSTOMER, {_dumps(c): 0 for c in customers})

    # --- users --------------------------------------------------------------------------
    async def user(self, email: str) -> dict | None:
        return next((u for u in await self._members(USER) if u.get("email") == email), None)

    async def add_user(self, user_name: str, email: str, password: str, phone="", birth_date=""):
        email = email.strip()
        if not EMAIL.match(email):
            raise InvalidInput("Email must look like name@example.com.")
        if len(password) < 8:
            raise InvalidInput("Password must have at least 8 characters.")
        if await self.user(email):
            raise InvalidInput("That email is already registered.")
        user = {
            "userName": user_name.strip() or email,
            "email": email,
            "phone": phone,
            "birthDate": birth_date,
            "passwordHash": _hasher.hash(password),
        }
        await self.client.zadd(USER, {_dumps(user): 0})
        return user

    async def check_password(self, email: str, password: str) -> bool:
        user = await self.user(email.strip())
        if user is None:
            _hasher.hash(password)  # same cost whether or not the user exists
            return False
        try:
            return _hasher.verify(user["passwordHash"], password)
        except (VerificationError, KeyError):
            return False

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
        history = self.durations.setdefault(customer["email"], [])
        history.append(StepTest(stop_ms, test["testTime"]))
        return test, risk_score(history)

    async def ensure_keys(self, admin_email: str | None, admin_password: str | None) -> str | None:
        """`Customer` and `User` exist after start (the user's flow checks `keys *`).

        Returns a generated first-user password when it had to create one.
        """
        generated = None
        if admin_email and admin_password and not await self.user(admin_email):
            await self.add_user("admin", admin_email, admin_password)
        if not await self.client.exists(USER):
            generated = secrets.token_urlsafe(12)
            await self.add_user("admin", "admin@stedi.test", generated)
        if not await self.client.exists(CUSTOMER):
            await self.add_customer(
                validate_customer("Sam Test", "sam.test@test.com", "8015551212", "2001-01-03")
            )
        return generated
