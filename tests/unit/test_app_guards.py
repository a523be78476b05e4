"""The app's guards against abuse, in-process: login reservations and device cookies, the
bounded argon2 queue, simulations that end, uniform sign-ups, headers and cookies."""

import asyncio
import dataclasses
import time
from types import SimpleNamespace

import fakeredis
import httpx
import pytest
from redis.exceptions import ConnectionError as RedisConnectionError

from stedi.app import store as store_module
from stedi.app.attempts import Attempts, LoginLimits, SignupLimit
from stedi.app.devices import DeviceCookies
from stedi.app.hashing import BoundedPool
from stedi.app.limits import LOGIN_FAILURES_PER_ACCOUNT, SECURITY_HEADERS
from stedi.app.services import connect
from stedi.app.simulation_slots import SimulationSlots
from stedi.app.simulator import MAX_RUNNING, Simulations, TooManySimulations
from stedi.app.store import Store
from stedi.app.web import create_app
from stedi.config import Settings
from stedi.stack.drivers import free_port


def processes_limits(count: int, window: int = 60) -> list[LoginLimits]:
    """The login limits of `count` app processes on one (fake) Redis."""
    server = fakeredis.FakeServer()
    return [
        LoginLimits(Attempts(fakeredis.FakeAsyncRedis(server=server), window)) for _ in range(count)
    ]


def test_attempts_are_counted_before_the_check_and_refunded_on_success():
    async def scenario():
        [limits] = processes_limits(1)
        held = [await limits.reserve("a@x.io", "10.0.0.1", None) for _ in range(10)]
        assert sum(r is not None for r in held) == LOGIN_FAILURES_PER_ACCOUNT  # none checked
        await limits.refund(held[0])  # the first one succeeded
        assert await limits.reserve("a@x.io", "10.0.0.1", None) is not None
        assert await limits.reserve("a@x.io", "10.0.0.1", None) is None
        assert limits.refused == 6

    asyncio.run(scenario())


def test_two_app_processes_count_one_accounts_attempts_together():
    async def scenario():
        first, second = processes_limits(2)
        attempts = [first, second] * 5
        held = [await p.reserve("a@x.io", f"10.0.0.{i}", None) for i, p in enumerate(attempts)]
        assert sum(r is not None for r in held) == LOGIN_FAILURES_PER_ACCOUNT
        await second.refund(held[0])  # a success in the other process gives its attempt back
        assert await first.reserve("a@x.io", "10.0.0.99", None) is not None

    asyncio.run(scenario())


def test_attempts_count_again_once_their_window_has_passed():
    async def scenario():
        [limits] = processes_limits(1, window=1)
        while await limits.reserve("a@x.io", "10.0.0.1", None) is not None:
            pass
        await asyncio.sleep(1.2)
        return await limits.reserve("a@x.io", "10.0.0.1", None)

    assert asyncio.run(scenario()) is not None


def test_sign_ups_are_limited_per_client_address_across_processes():
    async def scenario():
        server = fakeredis.FakeServer()
        limits = [
            SignupLimit(Attempts(fakeredis.FakeAsyncRedis(server=server), 60), per_client=3)
            for _ in range(2)
        ]
        answers = [await limits[i % 2].reserve("10.0.0.1") for i in range(5)]
        return answers, await limits[0].reserve("10.0.0.2")

    assert asyncio.run(scenario()) == ([True] * 3 + [False] * 2, True)


def test_a_known_device_keeps_its_own_attempts_while_unknown_clients_are_locked_out():
    async def scenario():
        [limits] = processes_limits(1)
        while await limits.reserve("a@x.io", "10.0.0.1", None) is not None:
            pass  # someone else used up the account's and the address's attempts
        assert await limits.reserve("a@x.io", "10.0.0.1", "device-1") is not None
        for _ in range(LOGIN_FAILURES_PER_ACCOUNT - 1):
            await limits.reserve("a@x.io", "10.0.0.1", "device-1")
        assert await limits.reserve("a@x.io", "10.0.0.1", "device-1") is None  # still slow
        assert await limits.reserve("a@x.io", "10.0.0.1", "device-2") is not None

    asyncio.run(scenario())


def test_a_device_cookie_counts_only_for_its_account_and_only_when_signed_by_us():
    cookies = DeviceCookies("secret")
    cookie = cookies.issue("a@x.io")
    assert cookies.device(cookie, "a@x.io")
    assert cookies.device(cookie, "b@x.io") is None
    assert cookies.device(cookie[:-2] + "xx", "a@x.io") is None
    assert DeviceCookies("another secret").device(cookie, "a@x.io") is None
    assert cookies.device(None, "a@x.io") is None
    expired = DeviceCookies("secret", max_age=-1)
    assert expired.device(cookie, "a@x.io") is None


def test_the_argon2_pool_refuses_at_once_beyond_its_queue():
    pool = BoundedPool(workers=1, queue=2)

    async def scenario():
        results = await asyncio.gather(
            *(pool.run(time.sleep, 0.05) for _ in range(5)), return_exceptions=True
        )
        return [type(r).__name__ for r in results]

    started = time.monotonic()
    assert asyncio.run(scenario()) == ["NoneType"] * 3 + ["Busy"] * 2
    assert time.monotonic() - started < 1
    assert pool.pending == 0


class SessionStore:
    """What Simulations asks a store: customers are created, sessions are looked up."""

    def __init__(self):
        self.logged_in: set[str] = set()

    async def save_customers(self, owner, customers, quota=True):
        return customers

    async def add_test(self, customer, start, stop):
        return {}, None, True

    async def has_session(self, owner):
        return owner in self.logged_in


def test_a_simulation_ends_with_its_owners_last_session_and_after_its_run_time():
    async def scenario():
        store = SessionStore()
        slots = SimulationSlots(fakeredis.FakeAsyncRedis())
        simulations = Simulations(store, lambda e, r: None, slots, speed=1, max_seconds=60)
        store.logged_in |= {"stays@x.io", "leaves@x.io", "long@x.io"}
        for owner in store.logged_in:
            await simulations.activate(owner)
        await simulations.start_operator("operator@x.io")  # STEDI_SIMULATE's: neither limit
        await asyncio.sleep(0)
        store.logged_in.discard("leaves@x.io")
        simulations.of("long@x.io").started -= 61
        simulations.of("operator@x.io").started -= 61
        await simulations.reap()
        running = {o for o, s in simulations.by_owner.items() if s.running}
        await simulations.stop_all()
        return running

    assert asyncio.run(scenario()) == {"stays@x.io", "operator@x.io"}


def test_a_sign_up_costs_one_hash_whether_or_not_the_email_is_taken(monkeypatch):
    hashed = []
    monkeypatch.setattr(store_module, "_hasher", SimpleNamespace(hash=lambda p: hashed.append(p)))
    store = Store(fakeredis.FakeAsyncRedis())

    async def scenario():
        return [
            await store.add_user("Old", "old@x.io", "password 0"),
            await store.add_user("Old", "old@x.io", "password 1"),
            await store.add_user("New", "new@x.io", "password 2"),
            await store.client.zcard("User"),
        ]

    assert asyncio.run(scenario()) == [True, False, True, 2]
    assert hashed == ["password 0", "password 1", "password 2"]


@pytest.mark.parametrize("secure", [False, True])
def test_pages_carry_the_security_headers_and_the_cookie_is_secure_when_set(secure):
    app = create_app(dataclasses.replace(Settings(), secure_cookies=secure))

    async def answers():  # in-process, without the lifespan: no Redis, no Kafka
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="https://app") as client:
            return [await client.get(path) for path in ("/login", "/signup", "/no-such-page")]

    responses = asyncio.run(answers())
    for response in responses:
        assert {k: response.headers.get(k) for k in SECURITY_HEADERS} == SECURITY_HEADERS
    cookie = responses[0].headers["set-cookie"]
    assert cookie.startswith("stedi_session=") and ("; secure" in cookie.lower()) is secure


def test_with_redis_away_the_real_client_gives_up_at_once():
    """redis-py's default retries a refused connection for seconds; a page would hang."""
    settings = dataclasses.replace(Settings(), redis_port=free_port())  # nothing listens

    async def attempt():
        services = connect(settings)
        try:
            await asyncio.wait_for(services.redis.ping(), timeout=2)
        finally:
            await services.redis.aclose()

    with pytest.raises(RedisConnectionError):  # not asyncio's TimeoutError
        asyncio.run(attempt())


def simulations_of_processes(count: int, store) -> list[Simulations]:
    """The simulations of `count` app processes on one (fake) Redis."""
    server = fakeredis.FakeServer()
    return [
        Simulations(
            store, lambda e, r: None, SimulationSlots(fakeredis.FakeAsyncRedis(server=server))
        )
        for _ in range(count)
    ]


def test_two_processes_start_no_more_simulations_than_the_cap_and_end_each_others():
    async def scenario():
        store = SessionStore()
        owners = [f"owner{i}@x.io" for i in range(MAX_RUNNING + 5)]
        store.logged_in |= set(owners)
        first, second = simulations_of_processes(2, store)

        async def switch_on(i: int, owner: str) -> str:
            try:
                await [first, second][i % 2].activate(owner)
            except TooManySimulations:
                return "refused"
            return "started"

        answers = await asyncio.gather(*(switch_on(i, o) for i, o in enumerate(owners)))
        running = first.running() + second.running()
        # The owner of a simulation in the first process switches it off in the second,
        # and another logs out there: the first process stops both at its next renewal.
        on_first = [o for o, s in first.by_owner.items() if s.running]
        await second.stop(on_first[0])
        store.logged_in.discard(on_first[1])
        await second.end_if_unattended(on_first[1])
        state = await second.state(on_first[0]), await second.state(on_first[2])
        await first.reap()
        after = {o for o, s in first.by_owner.items() if s.running}
        await first.stop_all()
        await second.stop_all()
        return answers, running, state, set(on_first) - after

    answers, running, state, stopped = asyncio.run(scenario())
    assert answers.count("started") == running == MAX_RUNNING
    assert answers.count("refused") == 5
    assert [s.running for s in state] == [False, True]
    assert len(stopped) == 2


def test_a_slot_whose_process_stopped_renewing_it_is_free_after_its_time():
    async def scenario():
        server = fakeredis.FakeServer()
        gone = SimulationSlots(fakeredis.FakeAsyncRedis(server=server), slot_seconds=0.2)
        alive = SimulationSlots(fakeredis.FakeAsyncRedis(server=server), slot_seconds=0.2)
        assert await gone.take("a@x.io", cap=1) == 1
        refused = await alive.take("b@x.io", cap=1)
        elsewhere = await alive.take("a@x.io", cap=1)
        await asyncio.sleep(0.3)  # the first process died: it renews nothing
        return refused, elsewhere, await alive.take("b@x.io", cap=1), await alive.state("a@x.io")

    refused, elsewhere, taken, state = asyncio.run(scenario())
    assert (refused, elsewhere, taken) == (-1, 2, 1)
    assert state.running is False
