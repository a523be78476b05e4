"""The simulator of docs/formats.md: 30 new customers per activation, one test every 2 s in turn.

Simulated time runs `speed` times faster: a test every 2/speed seconds of real
time. Test durations are values, not waits, so the speed changes nothing else.
Each user runs their own simulation, whose customers belong to that user; emails
come from a space that does not run out (a random numeric suffix once `First.Last` is
taken). A user's simulation ends with their last login session and after
STEDI_SIM_MAX_SECONDS; the one STEDI_SIMULATE=1 starts is the operator's and runs
until the app stops.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import time
from collections.abc import Awaitable, Callable

from redis.exceptions import RedisError

from stedi.app.risk import Risk, next_duration_ms
from stedi.app.simulation_slots import ELSEWHERE, FULL, SimulationSlots, SimulationState
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


MAX_PICKS = 10  # random picks from the pools before a numeric suffix makes the email unique
SUFFIXES = 1_000_000  # a million emails per name: a random one is all but always free
CLAIM_ROUNDS = 3  # proposals per activation, each replacing the emails found taken


def unused_email(
    first: str, last: str, taken: set[str], rng: random.Random, plain: bool = True
) -> str:
    """`First.Last@test.com`, or, once that is taken (or with plain=False), with a random
    numeric suffix (`First.Last48213@test.com`) that `taken` does not hold."""
    email = f"{first}.{last}@test.com"
    if plain and email not in taken:
        return email
    while True:
        email = f"{first}.{last}{rng.randrange(2, SUFFIXES)}@test.com"
        if email not in taken:
            return email


def new_customers(
    existing_emails: set[str],
    rng: random.Random,
    indices=range(CUSTOMERS_PER_ACTIVATION),
    plain: bool = True,
) -> list[dict]:
    """Customers with emails not in `existing_emails`; the i-th of an activation is born
    on 1 January of 1965 - i (so 1965, 1964, ... one year apart). plain=False: every
    email gets a random suffix (the plain names were found taken).

    `existing_emails` gets the new emails added.
    """
    customers = []
    for i in indices:
        for _ in range(MAX_PICKS):
            first, last = rng.choice(FIRST_NAMES), rng.choice(LAST_NAMES)
            if f"{first}.{last}@test.com" not in existing_emails:
                break
        email = unused_email(first, last, existing_emails, rng, plain)
        existing_emails.add(email)
        customers.append(
            {
                "customerName": email.split("@")[0].replace(".", " "),
                "email": email,
                "phone": "8015551212",
                "birthDay": f"{1965 - i}-01-01",
            }
        )
    return customers


class Simulator:
    """One user's simulation: its customers belong to `owner`."""

    def __init__(self, store: Store, publish: Publish, speed: float = 1.0, seed=None, owner=""):
        self.store, self.publish, self.speed, self.owner = store, publish, speed, owner
        self.started = 0.0  # time.monotonic() of the last start
        self.operator = False  # STEDI_SIMULATE's: bound to no session, no run time
        self.rng = random.Random(seed)
        self.task: asyncio.Task | None = None
        self.in_flight: asyncio.Task | None = None  # the test being written, shielded from stop
        self.tests_run = 0
        self.error: str | None = None
        self.sleep: Callable[[float], Awaitable] = asyncio.sleep
        self.switching = asyncio.Lock()  # one activation or stop at a time

    @property
    def running(self) -> bool:
        return self.task is not None and not self.task.done()

    def start(self) -> None:
        """Starts in the background: creates the customers, then tests them."""
        if not self.running:
            self.started = time.monotonic()
            self.task = asyncio.create_task(self._run(), name=f"simulator {self.owner}")
            log.info("simulation on for %s (speed x%g)", self.owner, self.speed)

    async def activate(self) -> None:
        """Creates the customers now, then tests them in the background."""
        async with self.switching:
            if not self.running:
                customers = await self._create_customers()
                self.started = time.monotonic()
                self.task = asyncio.create_task(self._test(customers), name="simulator")
                log.info("simulation on for %s (speed x%g)", self.owner, self.speed)

    async def stop(self) -> None:
        async with self.switching:
            if self.running:
                self.task.cancel()
                # wait() leaves the task's CancelledError in the task: a cancel of this
                # stop itself still ends it (awaiting the task would swallow that too).
                await asyncio.wait([self.task])
                log.info("simulation off for %s after %d tests", self.owner, self.tests_run)
            self.task = None
            await self._finish_in_flight()

    async def _finish_in_flight(self) -> None:
        """Waits for the test write a cancel left running, so its score reaches the
        publisher before the app flushes the publisher and exits; reports its failure."""
        in_flight = self.in_flight
        if in_flight is None:
            return
        await asyncio.wait([in_flight])  # also when a cancelled stop() left it running
        self.in_flight = None
        if not in_flight.cancelled() and (exc := in_flight.exception()) is not None:
            self.error = f"simulator: {exc}"
            log.warning("the last test before the stop failed: %s", exc)

    async def _run(self) -> None:
        await self._test(await self._create_customers())

    async def _create_customers(self) -> list[dict]:
        """Proposes the customers and claims their emails; one that turns out taken gets
        an email with a random suffix in the next round. It costs the claims of 30 emails
        (up to 30 more when some are taken), never a read of other users' customers."""
        taken: set[str] = set()
        saved: list[dict] = []
        missing = list(range(CUSTOMERS_PER_ACTIVATION))
        for round_ in range(CLAIM_ROUNDS):
            proposed = new_customers(taken, self.rng, missing, plain=round_ == 0)
            # The operator's simulation (STEDI_SIMULATE) is no user's: no quota.
            claimed = await self.store.save_customers(self.owner, proposed, quota=not self.operator)
            saved += claimed
            got = {c["email"] for c in claimed}
            missing = [i for i, c in zip(missing, proposed, strict=True) if c["email"] not in got]
            if not missing:
                break
        saved.sort(key=lambda c: c["birthDay"], reverse=True)  # 1965 first, as proposed
        log.info("created %d customers for %s", len(saved), self.owner)
        return saved

    async def _test(self, customers: list[dict]) -> None:
        previous: dict[str, int | None] = {c["email"]: None for c in customers}
        while customers:  # (none when every email was taken meanwhile: nothing to test)
            for customer in customers:
                await self.sleep(SECONDS_PER_TEST / self.speed)
                try:
                    # A stop never cuts a test in half (stored in Redis, its score not
                    # published): the write runs on, and stop() waits for it.
                    self.in_flight = asyncio.ensure_future(self._one_test(customer, previous))
                    await asyncio.shield(self.in_flight)
                    self.error = None
                except RedisError as exc:  # Redis down: try the next one later
                    self.error = f"simulator: {exc}"
                    log.warning(self.error)

    async def _one_test(self, customer: dict, previous: dict) -> None:
        birth_year = int(customer["birthDay"][:4])
        duration = next_duration_ms(previous[customer["email"]], birth_year, self.rng)
        stop = int(time.time() * 1000)
        _, risk, new = await self.store.add_test(customer, stop - duration, stop)
        previous[customer["email"]] = duration
        self.tests_run += 1
        if risk is not None and new:
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


MAX_RUNNING = 20  # simulations at once, all users and app processes together: a test every 2 s
REAP_SECONDS = 1.0  # how often a process looks for simulations to end and renews their slots


class TooManySimulations(Exception):
    pass


class Simulations:
    """This process's simulators, made on first use, under one cap for every app process:
    at most MAX_RUNNING run at once, counted in Redis (stedi/app/simulation_slots.py)."""

    def __init__(
        self,
        store: Store,
        publish: Publish,
        slots: SimulationSlots,
        speed: float = 1.0,
        max_seconds: float = 4 * 3600,
    ):
        self.store, self.publish, self.slots, self.speed = store, publish, slots, speed
        self.max_seconds = max_seconds
        self.by_owner: dict[str, Simulator] = {}

    def of(self, owner: str) -> Simulator:
        if owner not in self.by_owner:
            self.by_owner[owner] = Simulator(self.store, self.publish, self.speed, owner=owner)
        return self.by_owner[owner]

    def _running_here(self) -> dict[str, Simulator]:
        return {o: s for o, s in self.by_owner.items() if s.running}

    def running(self) -> int:
        """Simulations running in this process."""
        return len(self._running_here())

    async def state(self, owner: str) -> SimulationState:
        """The owner's simulation, in this process or another."""
        simulator = self.by_owner.get(owner)
        if simulator is not None and simulator.running:
            return SimulationState(True, simulator.tests_run)
        return await self.slots.state(owner)

    async def activate(self, owner: str) -> None:
        # The slot is taken, in Redis, before the customers are created: a burst of
        # switch-ons on any number of processes cannot pass the cap.
        taken = await self.slots.take(owner, MAX_RUNNING)
        if taken == FULL:
            raise TooManySimulations(
                f"{MAX_RUNNING} simulations are running already: try again later."
            )
        if taken == ELSEWHERE:
            return  # another app process runs it
        try:
            await self.of(owner).activate()
        except BaseException:
            with contextlib.suppress(RedisError):
                await asyncio.shield(self.slots.release(owner))
            raise

    async def stop(self, owner: str) -> None:
        """The owner's switch-off, in whichever process runs the simulation."""
        simulator = self.by_owner.get(owner)
        if simulator is not None and simulator.running:
            await self._stop_here(owner)
        else:
            await self.slots.release(owner, anywhere=True)

    async def _stop_here(self, owner: str) -> None:
        await self.by_owner[owner].stop()
        await self.slots.release(owner)

    async def start_operator(self, owner: str) -> None:
        """STEDI_SIMULATE=1's simulation: it runs until the app stops, in one app process."""
        if await self.slots.take(owner, 0, operator=True) == ELSEWHERE:
            log.info("the simulation of %s runs in another app process", owner)
            return
        simulator = self.of(owner)
        simulator.operator = True
        simulator.start()

    async def end_if_unattended(self, owner: str) -> None:
        """Stops the owner's simulation when they have no login session left, here or (by
        its slot) in the process that runs it."""
        simulator = self.by_owner.get(owner)
        if simulator is not None and simulator.operator:
            return
        if await self.store.has_session(owner):
            return
        if simulator is not None and simulator.running:
            log.info("simulation of %s ends with its owner's last session", owner)
            await self._stop_here(owner)
        else:
            await self.slots.release(owner, anywhere=True)

    async def reap(self) -> None:
        """Ends this process's simulations that ran STEDI_SIM_MAX_SECONDS, outlived their
        owner's last session (an expiry, which no request reports) or were ended by another
        process; renews the slots of the others."""
        for owner, simulator in self._running_here().items():
            if simulator.operator:
                continue
            if time.monotonic() - simulator.started >= self.max_seconds:
                log.info("simulation of %s ends after %g s", owner, self.max_seconds)
                await self._stop_here(owner)
            elif not await self.store.has_session(owner):
                log.info("simulation of %s ends with its owner's last session", owner)
                await self._stop_here(owner)
        running = self._running_here()
        lost = await self.slots.renew({o: s.tests_run for o, s in running.items()})
        for owner in lost:
            log.info("simulation of %s was ended in another app process", owner)
            await running[owner].stop()

    async def reap_forever(self) -> None:
        while True:
            await asyncio.sleep(REAP_SECONDS)
            try:
                await self.reap()
            except RedisError as exc:  # Redis away: the sessions cannot be told, try later
                log.warning("could not check the simulations' sessions: %s", exc)

    def errors(self) -> list[str]:
        return sorted({s.error for s in self.by_owner.values() if s.error})

    async def stop_all(self) -> None:
        for owner, simulator in self.by_owner.items():
            running = simulator.running
            await simulator.stop()
            if running:
                with contextlib.suppress(RedisError):  # Redis away: the slot expires
                    await self.slots.release(owner)
