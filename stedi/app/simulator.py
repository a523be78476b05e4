"""The simulator of STEDI-SPEC.md: 30 new customers per activation, one test every 2 s in turn.

Simulated time runs `speed` times faster: a test every 2/speed seconds of real
time. Test durations are values, not waits, so the speed changes nothing else.
"""

from __future__ import annotations

import asyncio
import logging
import random
import time
from collections.abc import Awaitable, Callable

from redis.exceptions import RedisError

from stedi.app.risk import Risk, next_duration_ms
from stedi.app.store import Store

log = logging.getLogger("stedi.app.simulator")

CUSTOMERS_PER_ACTIVATION = 30
SECONDS_PER_TEST = 2.0
FIRST_NAMES = [
    "Sarah", "Jason", "Santosh", "Senthil", "Lyn", "Craig", "Trevor", "Manoj", "Jerry",
    "Chris", "Spencer", "Ben", "Ashley", "Danny", "John", "Gail", "Liz", "Bobby", "Larry",
    "Neeraj", "Frank", "Edward", "Sean", "Angie", "Dan", "Jacob", "Christina", "Eric", "Suresh",
    "Jane", "Maria", "Olga", "Kwame", "Aiko", "Mateo",
]  # fmt: skip
LAST_NAMES = [
    "Fibonnaci", "Mitra", "Clayton", "Huey", "Lincoln", "Davis", "Anandh", "Spencer", "Jackson",
    "Wu", "Olson", "Smith", "Staples", "Howard", "Harris", "Khatib", "Abram", "Ahmed", "Aristotle",
    "Phillips", "Gonzalez", "Lee", "Ramirez", "Nakamura", "Okafor", "Petrov", "Rossi", "Silva",
    "Young", "Zhang",
]  # fmt: skip

Publish = Callable[[str, Risk], None]


def new_customers(existing_emails: set[str], rng: random.Random) -> list[dict]:
    """30 customers with unused emails, born 1965-01-01, 1964-01-01, ... (one year apart)."""
    customers = []
    for i in range(CUSTOMERS_PER_ACTIVATION):
        while True:
            first, last = rng.choice(FIRST_NAMES), rng.choice(LAST_NAMES)
            email = f"{first}.{last}@test.com"
            if email not in existing_emails:
                break
        existing_emails.add(email)
        customers.append(
            {
                "customerName": f"{first} {last}",
                "email": email,
                "phone": "8015551212",
                "birthDay": f"{1965 - i}-01-01",
            }
        )
    return customers


class Simulator:
    def __init__(self, store: Store, publish: Publish, speed: float = 1.0, seed=None):
        self.store, self.publish, self.speed = store, publish, speed
        self.rng = random.Random(seed)
        self.task: asyncio.Task | None = None
        self.tests_run = 0
        self.error: str | None = None
        self.sleep: Callable[[float], Awaitable] = asyncio.sleep

    @property
    def running(self) -> bool:
        return self.task is not None and not self.task.done()

    def start(self) -> None:
        if not self.running:
            self.task = asyncio.create_task(self._run(), name="simulator")
            log.info("simulation on (speed x%g)", self.speed)

    async def stop(self) -> None:
        if self.running:
            self.task.cancel()
            try:
                await self.task
            except asyncio.CancelledError:
                pass
            log.info("simulation off after %d tests", self.tests_run)
        self.task = None

    async def _run(self) -> None:
        existing = {c["email"] for c in await self.store.customers()}
        customers = new_customers(existing, self.rng)
        await self.store.save_customers(customers)
        log.info("created %d customers", len(customers))
        previous: dict[str, int | None] = {c["email"]: None for c in customers}
        while True:
            for customer in customers:
                await self.sleep(SECONDS_PER_TEST / self.speed)
                try:
                    await self._one_test(customer, previous)
                    self.error = None
                except RedisError as exc:  # Redis down: try the next one later
                    self.error = f"simulator: {exc}"
                    log.warning(self.error)

    async def _one_test(self, customer: dict, previous: dict) -> None:
        birth_year = int(customer["birthDay"][:4])
        duration = next_duration_ms(previous[customer["email"]], birth_year, self.rng)
        stop = int(time.time() * 1000)
        _, risk = await self.store.add_test(customer, stop - duration, stop)
        previous[customer["email"]] = duration
        self.tests_run += 1
        if risk is not None:
            self.publish(customer["email"], risk)
        # About one progress line every 2 s of real time, whatever the speed.
        if self.tests_run % max(1, round(self.speed)) == 0:
            score = "none yet" if risk is None else risk.score
            log.info(
                "test %d: %s (born %d) took %d s, risk score %s",
                self.tests_run,
                customer["email"],
                birth_year,
                duration // 1000,
                score,
            )
