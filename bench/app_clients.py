"""The app section's clients, all in one asyncio loop (aiohttp): caregivers who log in, load
their pages and post tests, and live graph viewers. Each caregiver or viewer is a browser of
its own (its cookies), on one app process; they take turns between the processes.

Every answer is checked (its status, and for a login its redirect to /timer): a bench that
counted failed requests as fast ones would measure nothing.
"""

from __future__ import annotations

import asyncio
import itertools
import json
import random
import re
import time
from collections import defaultdict
from dataclasses import dataclass, field

import aiohttp

from bench import app_data

CSRF = re.compile(r'name="csrf-token" content="([^"]+)"')
TIMEOUT = aiohttp.ClientTimeout(total=60)


@dataclass
class Timings:
    """Seconds per kind of request, and what went wrong."""

    seconds: dict[str, list[float]] = field(default_factory=lambda: defaultdict(list))
    errors: list[str] = field(default_factory=list)


ADDRESSES = itertools.count(1)


def browser() -> aiohttp.ClientSession:
    """A browser of its own, with an address of its own: the app processes believe the
    X-Forwarded-For of the loopback (STEDI_TRUSTED_PROXY), as behind a clinic's proxy; the
    address (a documentation range) only names the client, nothing is sent to it."""
    n = next(ADDRESSES)
    address = f"198.18.{n // 250 % 250}.{n % 250 + 1}"
    # unsafe: cookies for 127.0.0.1 (aiohttp keeps none for IP addresses otherwise)
    return aiohttp.ClientSession(
        cookie_jar=aiohttp.CookieJar(unsafe=True),
        connector=aiohttp.TCPConnector(limit=0),
        timeout=TIMEOUT,
        headers={"X-Forwarded-For": address},
    )


async def timed(timings: Timings, kind: str, request, expected: int) -> tuple[int, str, dict]:
    """Sends `request` (an aiohttp request context), reads the whole answer, records its
    time under `kind`, or an error when its status is not `expected`."""
    began = time.perf_counter()
    async with request as response:
        body = await response.text()
    timings.seconds[kind].append(time.perf_counter() - began)
    if response.status != expected:
        timings.errors.append(f"{kind}: {response.status} {body[:200]!r}")
    return response.status, body, dict(response.headers)


async def log_in(session: aiohttp.ClientSession, url: str, email: str, timings: Timings) -> str:
    """Logs in (the POST timed as "login"); the CSRF token of the session's pages."""
    async with session.get(f"{url}/login") as page:
        token = CSRF.search(await page.text())[1]
    form = {"email": email, "password": app_data.PASSWORD, "csrf": token}
    request = session.post(f"{url}/login", data=form, allow_redirects=False)
    status, _, headers = await timed(timings, "login", request, 303)
    if status == 303 and headers.get("Location") != "/timer":
        timings.errors.append(f"login: redirected to {headers.get('Location')}")
    async with session.get(f"{url}/timer") as page:
        return CSRF.search(await page.text())[1]


@dataclass(frozen=True)
class Load:
    clients: int  # caregivers loading pages and posting tests, each logged in beforehand
    seconds: float  # how long they do
    think_s: float  # mean pause after each request
    login_rate: float  # meanwhile, logins a second, each a new browser of another user
    users: int  # who may log in


@dataclass
class Caregiver:
    """Caregiver i's browser on one process, logged in: its session and CSRF token."""

    i: int
    url: str
    session: aiohttp.ClientSession
    token: str = ""


async def caregiver(
    who: Caregiver, tests: int, load: Load, timings: Timings, rng: random.Random
) -> None:
    """The timer page, one of the caregiver's customers' page and a test posted, in turn,
    until the load's time is up."""
    session, url, token = who.session, who.url, who.token
    customers = app_data.customers_of_caregiver(who.i, tests)
    await asyncio.sleep(rng.uniform(0, 2 * load.think_s))
    deadline = time.monotonic() + load.seconds
    while time.monotonic() < deadline:
        await timed(timings, "timer_page", session.get(f"{url}/timer"), 200)
        await asyncio.sleep(rng.uniform(0, 2 * load.think_s))
        email = rng.choice(customers)["email"]
        await timed(timings, "customer_page", session.get(f"{url}/customers/{email}"), 200)
        await asyncio.sleep(rng.uniform(0, 2 * load.think_s))
        stop = int(time.time() * 1000) - 1000
        test = {"email": email, "startTime": stop - rng.randint(61, 120) * 1000,
                "stopTime": stop, "totalSteps": 30}  # fmt: skip
        post = session.post(f"{url}/api/tests", json=test, headers={"X-CSRF-Token": token})
        await timed(timings, "post_test", post, 201)
        await asyncio.sleep(rng.uniform(0, 2 * load.think_s))


async def one_login(url: str, email: str, timings: Timings) -> None:
    async with browser() as session:
        token = await log_in(session, url, email, timings)
        await session.post(f"{url}/logout", data={"csrf": token}, allow_redirects=False)


async def logins(urls: list[str], load: Load, timings: Timings, rng: random.Random) -> None:
    """Logins at `load.login_rate` a second, each on its own whatever the others take (an
    open loop), of users picked at random, taking turns between the processes."""
    tasks, began = [], time.monotonic()
    for n in range(int(load.seconds * load.login_rate)):
        await asyncio.sleep(max(0.0, began + n / load.login_rate - time.monotonic()))
        email = app_data.user_email(rng.randrange(load.users))
        tasks.append(asyncio.ensure_future(one_login(urls[n % len(urls)], email, timings)))
    await asyncio.gather(*tasks)


async def logins_alone(urls: list[str], users: int, count: int, seed: int = 36) -> Timings:
    """`count` logins one after another, nothing else running: the login's own time."""
    timings, rng = Timings(), random.Random(seed)
    for n in range(count):
        await one_login(urls[n % len(urls)], app_data.user_email(rng.randrange(users)), timings)
    return timings


async def clinic(urls: list[str], tests: int, load: Load, seed: int = 35) -> Timings:
    """The caregivers log in (a few at a time, not timed), then load their pages while the
    logins go on, at once."""
    timings, rng = Timings(), random.Random(seed)
    at_once = asyncio.Semaphore(2 * len(urls))  # the processes' argon2 threads
    who = [Caregiver(i, urls[i % len(urls)], browser()) for i in range(load.clients)]

    async def ready(caregiver: Caregiver) -> None:
        async with at_once:
            caregiver.token = await log_in(caregiver.session, caregiver.url,
                                           app_data.user_email(caregiver.i), timings)  # fmt: skip

    try:
        await asyncio.gather(*(ready(c) for c in who))
        timings.seconds.pop("login", None)  # the window's logins are the ones timed
        await asyncio.gather(
            logins(urls, load, timings, rng),
            *(caregiver(c, tests, load, timings, rng) for c in who),
        )
    finally:
        for c in who:
            await c.session.close()
    return timings


# --- live graph viewers ---------------------------------------------------------------------
@dataclass
class Viewer:
    url: str
    received: dict[int, float] = field(default_factory=dict)  # point id -> arrival, epoch ms
    connected: asyncio.Event = field(default_factory=asyncio.Event)
    error: str | None = None


def point_id(point: dict) -> int:
    """Which record a point came from: its score names it (see `risk_record`)."""
    return round(point["score"] * 100)


def risk_record(point: int) -> tuple[bytes, bytes, list[tuple[str, bytes]]]:
    """The graph topic's record of point `point` (docs/formats.md), its score naming it; a
    riskDate header of its own, so the graph shows each one."""
    email = app_data.bench_customer(point % 1000)["email"]
    value = {"customer": email, "score": point / 100, "email": email, "birthYear": 1950}
    return email.encode(), json.dumps(value).encode(), [("riskDate", str(point).encode())]


async def watch(session: aiohttp.ClientSession, viewer: Viewer) -> None:
    """Reads the viewer's stream (until cancelled): each point's arrival time."""
    try:
        async with session.get(f"{viewer.url}/api/risk-stream") as response:
            if response.status != 200:
                viewer.error = f"stream: {response.status}"
                return
            event = None
            async for raw in response.content:
                line = raw.decode().rstrip("\n")
                if line.startswith("event: "):
                    event = line[len("event: ") :]
                    if event == "round":
                        viewer.connected.set()
                elif line.startswith("data: ") and event == "point":
                    arrived = time.time() * 1000
                    viewer.received.setdefault(point_id(json.loads(line[6:])), arrived)
            viewer.error = "the stream ended"
    except aiohttp.ClientError as exc:
        viewer.error = repr(exc)


async def viewers(
    urls: list[str], count: int, per_login: int, produce, settle_s: float, wait_s: float
) -> list[Viewer]:
    """`count` live graphs, `per_login` on each login (a browser's tabs), taking turns between
    the processes; `produce()` (in a thread) writes the points once all are connected (and
    `settle_s` later) and returns their ids; then each viewer gets up to `wait_s` seconds
    for the last of them."""
    watchers, sessions, all_viewers = [], [], []
    timings = Timings()
    for login in range(-(-count // per_login)):
        session = browser()
        sessions.append(session)
        await log_in(session, urls[login % len(urls)], app_data.user_email(login), timings)
        for tab in range(min(per_login, count - login * per_login)):
            viewer = Viewer(urls[(login * per_login + tab) % len(urls)])
            all_viewers.append(viewer)
            watchers.append(asyncio.ensure_future(watch(session, viewer)))
    try:
        if timings.errors:
            raise RuntimeError(f"viewers' logins failed: {timings.errors[:3]}")
        await asyncio.wait_for(
            asyncio.gather(*(v.connected.wait() for v in all_viewers)), timeout=60
        )
        await asyncio.sleep(settle_s)
        ids = await asyncio.to_thread(produce)
        deadline = time.monotonic() + wait_s
        while time.monotonic() < deadline and any(
            len(v.received) < len(ids) and v.error is None for v in all_viewers
        ):
            await asyncio.sleep(0.1)
    finally:
        for watcher in watchers:
            watcher.cancel()
        await asyncio.gather(*watchers, return_exceptions=True)
        for session in sessions:
            await session.close()
    return all_viewers
