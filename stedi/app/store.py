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
UserEmail              hash: user email -> the user's `User` member, claimed once with HSETNX
                       (sign-ups are atomic); a login reads its user here, in one command.
                       "1", from before it held the member, is replaced by the index pass
Login:<sha256(id)>     hash: {user}, a login session, expiring with it; the cookie holds
                       the id, Redis only its hash
LoginsOf:<user>        hash: sha256(id) -> expiry (epoch s), the user's sessions
TestsOf:<customer>     hash: "<stopTime>:<startTime>" -> the test with the risk the app
                       computed when it stored it ({"startTime","stopTime","testTime",
                       "totalSteps","score","riskDate"}, times in epoch ms, score and
                       riskDate null before the 4th test): an index of `RapidStepTest`, so
                       one customer's page reads only that customer's tests
LatestTest             hash: customer email -> {"stopTime","score","riskDate","recent"}, the
                       last test, the current risk and the four most recent tests
                       ([stopTime, testTime] each, oldest first): all a new test's score needs
Indexed                hash: sorted set name -> how many of its members the indexes above
                       hold; each write adds to it in the same Lua script as its ZADD
Every write of an entity is one Lua script (its ZADD, its index entries and its count), so
the indexes never lag behind the sorted sets, whichever app process writes. `RapidStepTest`
stays the store of record: stedi/app/reindex.py indexes, in the background, what a sorted
set holds beyond its count (data from before the indexes, or written outside the app).
"""

from __future__ import annotations

import hashlib
import json
import secrets
import time
from dataclasses import dataclass

import redis.asyncio as aioredis
from argon2 import PasswordHasher
from argon2.exceptions import VerificationError
from redis.exceptions import RedisError

from stedi.app import validation
from stedi.app.hashing import BoundedPool
from stedi.app.risk import TOTAL_STEPS, Risk, StepTest, most_recent, risk_score
from stedi.app.validation import InvalidInput

CUSTOMER, USER, RAPID_STEP_TEST = "Customer", "User", "RapidStepTest"
CUSTOMER_OWNER, USER_EMAIL, LATEST_TEST = "CustomerOwner", "UserEmail", "LatestTest"
INDEXED = "Indexed"
LEGACY_CLAIM = b"1"  # a UserEmail value from before it held the user's member
SAMPLE_CUSTOMER = {"customerName": "Sam Test", "email": "sam.test@test.com",
                   "phone": "8015551212", "birthDay": "2001-01-03"}  # fmt: skip
SCAN_COUNT = 1000  # members Redis looks at per ZSCAN call (its default, 10, is 100x the calls)
WRITE_ATTEMPTS = 20  # a test write retried while other writes of its customer win the race
_hasher = PasswordHasher()
_hashing = BoundedPool()  # argon2 never on the event loop; a burst beyond its queue: Busy

# KEYS: UserEmail, User, Indexed. ARGV: email, member. 0: the email is taken.
ADD_USER = """
if redis.call('HSETNX', KEYS[1], ARGV[1], ARGV[2]) == 0 then return 0 end
if redis.call('ZADD', KEYS[2], 0, ARGV[2]) == 1 then redis.call('HINCRBY', KEYS[3], KEYS[2], 1) end
return 1
"""
# KEYS: CustomerOwner, CustomersOf:<owner>, Customer, Indexed. ARGV: owner, quota (0: none),
# then email and member of each customer. {-1, owned} over the quota, else 1/0 per customer
# (claimed or taken); the claimed ones in one ZADD, as one record on `redis-server`.
ADD_CUSTOMERS = """
local count = (#ARGV - 2) / 2
local quota = tonumber(ARGV[2])
if quota > 0 then
  local owned = redis.call('HLEN', KEYS[2])
  if owned + count > quota then return {-1, owned} end
end
local claimed, members = {}, {}
for i = 3, #ARGV, 2 do
  if redis.call('HSETNX', KEYS[1], ARGV[i], ARGV[1]) == 1 then
    redis.call('HSET', KEYS[2], ARGV[i], ARGV[i + 1])
    members[#members + 1] = '0'
    members[#members + 1] = ARGV[i + 1]
    claimed[#claimed + 1] = 1
  else
    claimed[#claimed + 1] = 0
  end
end
if #members > 0 then
  local added = redis.call('ZADD', KEYS[3], unpack(members))
  if added > 0 then redis.call('HINCRBY', KEYS[4], KEYS[3], added) end
end
return claimed
"""
# KEYS: RapidStepTest, TestsOf:<email>, LatestTest, Indexed. ARGV: member, field, row,
# email, the LatestTest value the score was computed from ('' for none), the new one.
# -1, nothing written: another write of this customer came first (read again, retry).
ADD_TEST = """
if (redis.call('HGET', KEYS[3], ARGV[4]) or '') ~= ARGV[5] then return -1 end
local added = redis.call('ZADD', KEYS[1], 0, ARGV[1])
if added == 1 then redis.call('HINCRBY', KEYS[4], KEYS[1], 1) end
redis.call('HSETNX', KEYS[2], ARGV[2], ARGV[3])
redis.call('HSET', KEYS[3], ARGV[4], ARGV[6])
return added
"""
# KEYS: UserEmail. ARGV: email and member pairs: each user's entry, unless it has one
# (the first member of an email wins, as a login found it before the index).
INDEX_USERS = """
for i = 1, #ARGV, 2 do
  local held = redis.call('HGET', KEYS[1], ARGV[i])
  if not held or held == '1' then redis.call('HSET', KEYS[1], ARGV[i], ARGV[i + 1]) end
end
return 1
"""


class CustomerQuota(Exception):
    """A user would own more customers than STEDI_CUSTOMERS_PER_USER (HTTP 403)."""


class Contended(RedisError):
    """A customer's test write lost every attempt to other writes of the same customer."""


def dumps(entity: dict) -> str:
    return json.dumps(entity, separators=(",", ":"), ensure_ascii=False)


def customers_of(user: str) -> str:
    return f"CustomersOf:{user}"


def tests_of(customer_email: str) -> str:
    return f"TestsOf:{customer_email}"


def test_field(test: dict) -> str:
    return f"{test['stopTime']}:{test['startTime']}"


def test_row(test: dict, risk: Risk | None) -> str:
    """A TestsOf value: the test without its customer, with the risk computed when stored."""
    return dumps(
        {
            "startTime": test["startTime"],
            "stopTime": test["stopTime"],
            "testTime": test["testTime"],
            "totalSteps": test.get("totalSteps"),
            "score": None if risk is None else risk.score,
            "riskDate": None if risk is None else risk.risk_date_ms,
        }
    )


def latest_value(recent: list[StepTest]) -> str:
    """A LatestTest value from a customer's most recent tests (most_recent's)."""
    risk = risk_score(recent)
    return dumps(
        {
            "stopTime": recent[-1].stop_ms,
            "score": None if risk is None else risk.score,
            "riskDate": None if risk is None else risk.risk_date_ms,
            "recent": [[t.stop_ms, t.duration_ms] for t in recent],
        }
    )


def recent_of(latest: bytes | None) -> list[StepTest] | None:
    """The most recent tests a LatestTest value keeps; None when it keeps none (written
    before it did, or not a value of ours)."""
    try:
        recent = json.loads(latest)["recent"]
        return [StepTest(int(stop), int(duration)) for stop, duration in recent]
    except (TypeError, ValueError, KeyError):
        return None


def is_test(entity: object) -> bool:
    """A RapidStepTest member (or TestsOf row) with the times a score needs."""
    return isinstance(entity, dict) and all(
        isinstance(entity.get(f), int) for f in ("startTime", "stopTime", "testTime")
    )


def loads_all(raw: list[bytes]) -> list[dict]:
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


def user_of(raw: bytes | None, email: str) -> dict | None:
    """The user a UserEmail value or `User` member holds, if it is `email`'s."""
    users = loads_all([raw]) if raw is not None else []
    return users[0] if users and users[0].get("email") == email else None


def member_pattern(email: str) -> str:
    """A ZSCAN MATCH pattern for the `User` members of `email` (as `dumps` writes them)."""
    field = '"email":' + json.dumps(email, ensure_ascii=False)
    return "*" + "".join("\\" + c if c in "*?[]\\" else c for c in field) + "*"


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
    customers_per_user: int = 5000
    tests_stored: int = 0  # new tests this process stored since start, for /metrics

    def __post_init__(self):
        register = self.client.register_script
        self._add_user, self._add_customers = register(ADD_USER), register(ADD_CUSTOMERS)
        self._add_test, self._index_users = register(ADD_TEST), register(INDEX_USERS)

    async def ping(self) -> bool:
        return bool(await self.client.ping())

    async def indexed(self, entity: str) -> bool:
        """Whether the indexes hold every member of the sorted set `entity`."""
        async with self.client.pipeline(transaction=True) as pipe:
            size, count = await pipe.zcard(entity).hget(INDEXED, entity).execute()
        return size == int(count or 0)

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
        """Claims each email for `owner` and stores the customers whose claim succeeded, in
        one step for every app process; CustomerQuota when the owner would own more than
        the quota (unless quota=False)."""
        if not customers:
            return []
        args = [owner, self.customers_per_user if quota else 0]
        for c in customers:
            args += [c["email"], dumps(c)]
        keys = [CUSTOMER_OWNER, customers_of(owner), CUSTOMER, INDEXED]
        claimed = await self._add_customers(keys=keys, args=args)
        if claimed and claimed[0] == -1:
            raise CustomerQuota(
                f"You have {claimed[1]} customers; one user may have at most "
                f"{self.customers_per_user}."
            )
        return [c for c, ok in zip(customers, claimed, strict=True) if ok]

    async def customer_tests(self, email: str) -> list[dict]:
        """The customer's tests from TestsOf, newest first: one read, of this customer's
        tests only, however many tests the others have."""
        rows = [row for row in loads_all(await self.client.hvals(tests_of(email))) if is_test(row)]
        return sorted(rows, key=lambda t: (t["stopTime"], t["startTime"]), reverse=True)

    async def latest_tests(self, emails: list[str]) -> dict[str, dict]:
        """LatestTest of these customers (those tested at least once), in one read."""
        if not emails:
            return {}
        found = await self.client.hmget(LATEST_TEST, emails)
        return {e: json.loads(v) for e, v in zip(emails, found, strict=True) if v is not None}

    # --- users --------------------------------------------------------------------------
    async def user(self, email: str) -> dict | None:
        """The user of this email: one read of its UserEmail entry. Only while the index
        pass has not indexed every user (older data) is `User` searched, by Redis."""
        raw = await self.client.hget(USER_EMAIL, email)
        user = user_of(raw, email)
        if user is not None or (raw is None and await self.indexed(USER)):
            return user
        return await self._user_from_set(email)

    async def _user_from_set(self, email: str) -> dict | None:
        """The first `User` member of `email` (ZSCAN with MATCH: Redis does the search, the
        app parses only the matches), then indexed for the next login."""
        pattern = member_pattern(email)
        async for member, _ in self.client.zscan_iter(USER, match=pattern, count=SCAN_COUNT):
            user = user_of(member, email)
            if user is not None:
                await self._index_users(keys=[USER_EMAIL], args=[email, member])
                return user
        return None

    async def add_user(
        self, user_name: str, email: str, password: str, phone="", birth_date=""
    ) -> bool:
        """A new account from already validated fields (see validation.signup); False when
        the email is taken. Both cost one argon2 hash, so the time does not tell them apart."""
        password_hash = await _off_loop(_hasher.hash, password)
        user = {
            "userName": user_name or email,
            "email": email,
            "phone": phone,
            "birthDate": birth_date,
            "passwordHash": password_hash,
        }
        # One claim per email, ever, and the member with it.
        added = await self._add_user(keys=[USER_EMAIL, USER, INDEXED], args=[email, dumps(user)])
        return bool(added)

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
        sorted set: stored once, scored alike. The risk comes from the customer's four most
        recent tests, kept in LatestTest: a few reads, whatever the history."""
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
        keys = [RAPID_STEP_TEST, tests_of(email), LATEST_TEST, INDEXED]
        for _ in range(WRITE_ATTEMPTS):
            current = await self.client.hget(LATEST_TEST, email)
            recent = await self._recent_tests(email, current)
            recent = most_recent([*recent, StepTest(stop_ms, stop_ms - start_ms)])
            risk = risk_score(recent)
            args = [dumps(test), test_field(test), test_row(test, risk), email]
            args += [current or b"", latest_value(recent)]
            # Also when the test was there already: a retry after a failed write.
            added = await self._add_test(keys=keys, args=args)
            if added >= 0:
                self.tests_stored += added
                return test, risk, bool(added)
        raise Contended(f"The tests of {email} are being written by others: try again.")

    async def _recent_tests(self, email: str, latest: bytes | None) -> list[StepTest]:
        """The customer's most recent tests: from LatestTest, or (a value written before it
        kept them) from the customer's own index."""
        recent = recent_of(latest)
        if recent is not None:
            return recent
        rows = await self.customer_tests(email)
        return most_recent(StepTest(r["stopTime"], r["testTime"]) for r in rows)

    async def ensure_keys(self, admin_email: str | None, admin_password: str | None) -> str | None:
        """`Customer` and `User` exist after start (the user's flow checks `keys *`); the
        sample customer Sam Test belongs to the admin. A few commands, whatever Redis holds.

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
            await self.save_customers(owner, [SAMPLE_CUSTOMER], quota=False)
        return generated


def adopter(admin_email: str | None) -> str:
    """Who gets the customers stored before customers had owners (stedi/app/reindex.py)."""
    return admin_email or "admin@stedi.test"
