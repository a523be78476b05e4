"""The app's writes are Lua scripts since issue 35: a real redis-server passes each script's
ZADD to its replicas as the command itself, so the Redis source (a replica) publishes the
same records on `redis-server` as for the plain ZADDs the app sent before, and nothing of
the app's own hashes."""

import asyncio
import time

import pytest
import redis.asyncio as aioredis

from stedi.app.store import Store, dumps
from stedi.redis_source.records import command_record, zadd_value
from stedi.redis_source.replication import ReplicaConnection
from tests.app_server import a_customer

pytestmark = pytest.mark.integration


@pytest.fixture
def replica(stack):
    """A replication link of the test's own to the stack's Redis, from now on."""
    link = ReplicaConnection(stack.redis_host, stack.redis_port, stack.redis_password)
    link.psync(None, None)
    yield link
    link.close()


def app_writes(stack, unique: str) -> tuple[str, list[dict], dict]:
    """A sign-up, three customers claimed at once, a test: the User member, the customers and
    the test (its member without the store's fields)."""

    async def write():
        client = aioredis.Redis(host=stack.redis_host, port=stack.redis_port)
        try:
            store = Store(client)
            email = f"rita.{unique}@test.com"
            assert await store.add_user("Rita", email, "a long enough password")
            customers = [
                {**a_customer(f"Rep{i} Lica"), "email": f"rep{i}.{unique}@test.com"}
                for i in range(3)
            ]
            assert await store.save_customers(email, customers) == customers
            stop = int(time.time() * 1000)
            test, _, new = await store.add_test(customers[0], stop - 70_000, stop)
            assert new
            return (await client.hget("UserEmail", email)).decode(), customers, test
        finally:
            await client.aclose()

    return asyncio.run(write())


def test_the_apps_scripts_reach_the_replica_as_the_zadds_they_were(replica, stack, unique):
    user, customers, test = app_writes(stack, unique)
    seen, deadline = [], time.monotonic() + 30
    while time.monotonic() < deadline and not any(a[1] == b"RapidStepTest" for a in seen):
        seen += [argv for argv, _ in replica.read_commands() if unique.encode() in b"".join(argv)]
    zadds = [argv for argv in seen if argv[0].upper() == b"ZADD"]
    members = [dumps(c).encode() for c in customers]
    assert zadds == [
        [b"ZADD", b"User", b"0", user.encode()],
        [b"ZADD", b"Customer", *(part for m in members for part in (b"0", m))],
        [b"ZADD", b"RapidStepTest", b"0", dumps(test).encode()],
    ]
    assert not [argv for argv in seen if argv[0].upper() in (b"EVAL", b"EVALSHA")]
    # Exactly the records of those commands, and none of the app's hashes.
    records = [r for r in map(command_record, seen) if r is not None]
    assert [(r.key, r.value) for r in records] == [
        (b"User", zadd_value(b"User", [(user.encode(), 0.0)])),
        (b"Customer", zadd_value(b"Customer", [(m, 0.0) for m in members])),
        (b"RapidStepTest", zadd_value(b"RapidStepTest", [(dumps(test).encode(), 0.0)])),
    ]
