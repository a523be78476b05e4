"""The index pass: what the app's indexes lack, indexed in the background, in batches.

Every app write adds its sorted-set member, its index entries and one to the set's count in
the hash `Indexed`, in one Lua script (stedi/app/store.py). At start, a sorted set that holds
more than its count (data from before the indexes, or written outside the app), or whose
index is gone, is read with ZSCAN, BATCH members at a time, by one app process (a lease in
Redis) while every process serves. Its count is set right at the end, so a pass cut short
runs again at the next start. The process holds one batch at a time, never the history.

- User: each member becomes its email's UserEmail entry (unless the email has one), then the
  entries whose member is no longer in `User` go.
- Customer: customers without an owner go to the admin, so their emails count as taken.
- RapidStepTest: a test without its TestsOf row waits in `Unindexed:<customer>` (a hash of
  rows), its customer in `UnindexedCustomers`, as does a customer without LatestTest. Then,
  customer by customer, each waiting test gets its row, scored as if the customer's tests
  were stored in stop order, and LatestTest is computed from all of the customer's tests.
"""

from __future__ import annotations

import asyncio
import logging
import secrets
from collections.abc import AsyncIterator

from redis.exceptions import RedisError

from stedi.app.risk import StepTest, most_recent, risk_after_each
from stedi.app.store import (
    CUSTOMER,
    CUSTOMER_OWNER,
    INDEXED,
    LATEST_TEST,
    RAPID_STEP_TEST,
    USER,
    USER_EMAIL,
    Store,
    customers_of,
    dumps,
    is_test,
    latest_value,
    loads_all,
    test_field,
    test_row,
    tests_of,
)

log = logging.getLogger("stedi.app.reindex")
BATCH = 1000  # members read, parsed and indexed at a time
LEASE = "IndexPass"  # hash {holder}: the process running the pass, expiring unless renewed
LEASE_SECONDS = 60
UNINDEXED_CUSTOMERS = "UnindexedCustomers"
RETRY_SECONDS = 5
INDEX_OF = {USER: USER_EMAIL, CUSTOMER: CUSTOMER_OWNER, RAPID_STEP_TEST: LATEST_TEST}

# KEYS: IndexPass. ARGV: holder, seconds. 0: another process holds it.
TAKE_LEASE = """
local holder = redis.call('HGET', KEYS[1], 'holder')
if holder and holder ~= ARGV[1] then return 0 end
redis.call('HSET', KEYS[1], 'holder', ARGV[1])
redis.call('EXPIRE', KEYS[1], ARGV[2])
return 1
"""
END_LEASE = """
if redis.call('HGET', KEYS[1], 'holder') == ARGV[1] then redis.call('DEL', KEYS[1]) end
return 1
"""
# KEYS: UserEmail, User. ARGV: emails. Drops the entries whose member `User` lacks.
DROP_GONE_USERS = """
local dropped = 0
for i = 1, #ARGV do
  local held = redis.call('HGET', KEYS[1], ARGV[i])
  if held and (held == '1' or not redis.call('ZSCORE', KEYS[2], held)) then
    redis.call('HDEL', KEYS[1], ARGV[i])
    dropped = dropped + 1
  end
end
return dropped
"""
# KEYS: CustomerOwner, CustomersOf:<owner>. ARGV: owner, then email and member pairs.
ADOPT = """
for i = 2, #ARGV, 2 do
  if redis.call('HSETNX', KEYS[1], ARGV[i], ARGV[1]) == 1 then
    redis.call('HSET', KEYS[2], ARGV[i], ARGV[i + 1])
  end
end
return 1
"""
# KEYS: TestsOf:<email>, LatestTest, Unindexed:<email>, UnindexedCustomers. ARGV: email,
# LatestTest as read ('' for none), the new LatestTest, then field and row pairs.
# 0, nothing written: the app stored a test of this customer meanwhile (read again).
INDEX_CUSTOMER = """
if (redis.call('HGET', KEYS[2], ARGV[1]) or '') ~= ARGV[2] then return 0 end
for i = 4, #ARGV, 2 do redis.call('HSETNX', KEYS[1], ARGV[i], ARGV[i + 1]) end
redis.call('HSET', KEYS[2], ARGV[1], ARGV[3])
redis.call('DEL', KEYS[3])
redis.call('HDEL', KEYS[4], ARGV[1])
return 1
"""


def unindexed(customer_email: str) -> str:
    return f"Unindexed:{customer_email}"


def waiting_row(test: dict) -> str:
    """A test waiting for its row: its times, without customer and score."""
    return dumps({k: test.get(k) for k in ("startTime", "stopTime", "testTime", "totalSteps")})


def rows_in_stop_order(indexed: list[dict], waiting: list[dict]) -> tuple[dict[str, str], str]:
    """The TestsOf rows of the waiting tests, each scored as if the customer's tests had been
    stored in stop order, and the customer's LatestTest from all of them (pure)."""
    steps = {(t["stopTime"], t["testTime"]): t for t in [*indexed, *waiting]}
    scored = dict(risk_after_each(StepTest(stop, time) for stop, time in steps))
    rows = {
        test_field(t): test_row(t, scored[StepTest(t["stopTime"], t["testTime"])]) for t in waiting
    }
    return rows, latest_value(most_recent(scored))


class IndexPass:
    """The pass of one app process; `run` does nothing when every index is whole."""

    def __init__(self, store: Store, adopter: str):
        self.store, self.client, self.adopter = store, store.client, adopter
        self.holder = secrets.token_hex(8)
        self.progress = ""  # what it does now, for /health
        self.task: asyncio.Task | None = None  # run_until_done, once the app is up
        register = self.client.register_script
        self._take, self._end = register(TAKE_LEASE), register(END_LEASE)
        self._drop_gone, self._adopt = register(DROP_GONE_USERS), register(ADOPT)
        self._index_customer = register(INDEX_CUSTOMER)

    async def needed(self) -> list[str]:
        """The sorted sets whose indexes lack members: a few commands, whatever they hold."""
        async with self.client.pipeline(transaction=False) as pipe:
            for entity, index in INDEX_OF.items():
                pipe.zcard(entity).hget(INDEXED, entity).exists(index)
            pipe.exists(UNINDEXED_CUSTOMERS)
            *found, waiting = await pipe.execute()
        needed = []
        for i, entity in enumerate(INDEX_OF):
            size, count, index_exists = found[3 * i : 3 * i + 3]
            if size != int(count or 0) or (size and not index_exists):
                needed.append(entity)
        if waiting and RAPID_STEP_TEST not in needed:
            needed.append(RAPID_STEP_TEST)  # a pass cut short between its two steps
        return needed

    async def run_until_done(self) -> None:
        """`run`, again after RETRY_SECONDS while Redis is away."""
        while True:
            try:
                await self.run()
                return
            except RedisError as exc:
                log.warning("index pass: Redis unavailable (%s): retrying", exc)
                await asyncio.sleep(RETRY_SECONDS)
            except Exception:  # the app serves on; the next start runs the pass again
                log.exception("index pass failed")
                return

    async def stop(self) -> None:
        if self.task is not None:
            self.task.cancel()
            await asyncio.wait([self.task])

    async def run(self) -> None:
        todo = await self.needed()
        if not todo:
            return
        if not await self._take(keys=[LEASE], args=[self.holder, LEASE_SECONDS]):
            log.info("index pass: another app process runs it")
            return
        try:
            for entity in todo:
                await self._index(entity)
        finally:
            self.progress = ""
            await self._end(keys=[LEASE], args=[self.holder])

    async def _index(self, entity: str) -> None:
        async with self.client.pipeline(transaction=True) as pipe:
            size, count = await pipe.zcard(entity).hget(INDEXED, entity).execute()
        beyond = size - int(count or 0)  # app writes meanwhile add to both
        log.info("index pass: %s, %d members (%d beyond its count)", entity, size, beyond)
        index_batch = {
            USER: self._users,
            CUSTOMER: self._customers,
            RAPID_STEP_TEST: self._tests,
        }[entity]
        done = 0
        async for members in self._batches(entity):
            await index_batch(members)
            done += len(members)
            self.progress = f"indexing {entity}: {done:,} of about {size:,}"
            if not await self._take(keys=[LEASE], args=[self.holder, LEASE_SECONDS]):
                raise RedisError("index pass: the lease went to another process")
        if entity == USER:
            await self._drop_gone_users()
        if entity == RAPID_STEP_TEST:
            await self._index_waiting_customers()
        await self.client.hincrby(INDEXED, entity, beyond)
        log.info("index pass: %s done", entity)

    async def _batches(self, key: str) -> AsyncIterator[list[bytes]]:
        """The members of a sorted set, about BATCH at a time (ZSCAN: each member present
        for the whole scan comes at least once)."""
        cursor = None
        while cursor != 0:
            cursor, found = await self.client.zscan(key, cursor or 0, count=BATCH)
            if found:
                yield [member for member, _ in found]

    async def _users(self, members: list[bytes]) -> None:
        args = []
        for member, user in zip(members, loads_all_aligned(members), strict=True):
            if user is not None and isinstance(user.get("email"), str):
                args += [user["email"], member]
        if args:
            await self.store._index_users(keys=[USER_EMAIL], args=args)

    async def _drop_gone_users(self) -> None:
        cursor, dropped = None, 0
        while cursor != 0:
            cursor, entries = await self.client.hscan(USER_EMAIL, cursor or 0, count=BATCH)
            if entries:
                dropped += await self._drop_gone(keys=[USER_EMAIL, USER], args=list(entries))
        if dropped:
            log.info("index pass: %d UserEmail entries of users no longer in User dropped", dropped)

    async def _customers(self, members: list[bytes]) -> None:
        args = [self.adopter]
        for member, customer in zip(members, loads_all_aligned(members), strict=True):
            if customer is not None and isinstance(customer.get("email"), str):
                args += [customer["email"], member]
        if len(args) > 1:
            await self._adopt(keys=[CUSTOMER_OWNER, customers_of(self.adopter)], args=args)

    async def _tests(self, members: list[bytes]) -> None:
        tests = [
            (t["customer"]["email"], t)
            for t in loads_all(members)
            if is_test(t) and isinstance((t.get("customer") or {}).get("email"), str)
        ]
        if not tests:
            return
        emails = sorted({email for email, _ in tests})
        async with self.client.pipeline(transaction=False) as pipe:
            for email, test in tests:
                pipe.hexists(tests_of(email), test_field(test))
            pipe.hmget(LATEST_TEST, emails)
            *indexed, latest = await pipe.execute()
        waiting = {e for e, summary in zip(emails, latest, strict=True) if summary is None}
        async with self.client.pipeline(transaction=False) as pipe:
            for (email, test), has_row in zip(tests, indexed, strict=True):
                if not has_row:
                    pipe.hset(unindexed(email), test_field(test), waiting_row(test))
                    waiting.add(email)
            for email in waiting:
                pipe.hset(UNINDEXED_CUSTOMERS, email, 1)
            await pipe.execute()

    async def _index_waiting_customers(self) -> None:
        cursor, done = None, 0
        while cursor != 0:
            cursor, emails = await self.client.hscan(UNINDEXED_CUSTOMERS, cursor or 0, count=100)
            for raw in emails:
                await self._index_customer_tests(raw.decode())
                done += 1
            self.progress = f"indexing RapidStepTest: {done:,} customers scored"
            await self._take(keys=[LEASE], args=[self.holder, LEASE_SECONDS])

    async def _index_customer_tests(self, email: str) -> None:
        while True:
            async with self.client.pipeline(transaction=True) as pipe:
                pipe.hvals(unindexed(email)).hvals(tests_of(email)).hget(LATEST_TEST, email)
                waiting, indexed, latest = await pipe.execute()
            waiting = [t for t in loads_all(waiting) if is_test(t)]
            indexed = [t for t in loads_all(indexed) if is_test(t)]
            if not waiting and not indexed:  # no test of theirs is left to index
                await self.client.delete(unindexed(email))
                await self.client.hdel(UNINDEXED_CUSTOMERS, email)
                return
            rows, new_latest = rows_in_stop_order(indexed, waiting)
            args = [email, latest or b"", new_latest]
            for field, row in rows.items():
                args += [field, row]
            keys = [tests_of(email), LATEST_TEST, unindexed(email), UNINDEXED_CUSTOMERS]
            if await self._index_customer(keys=keys, args=args):
                return


def loads_all_aligned(members: list[bytes]) -> list[dict | None]:
    """Each member's JSON object, or None where it is not one."""
    found = []
    for member in members:
        parsed = loads_all([member])
        found.append(parsed[0] if parsed else None)
    return found
