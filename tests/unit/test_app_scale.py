"""The app at scale, in-process (TestClient, fakeredis): a login's Redis commands do not
depend on the number of users, a start's not on the history, and the index pass brings
older data (issue 35's) into the indexes, in batches. Counted in commands, never timed."""

import asyncio
import json
import time

import fakeredis
import pytest

from bench import app_data
from stedi.app import reindex
from stedi.app.risk import StepTest, risk_after_each
from stedi.app.store import INDEXED, Store, member_pattern
from tests.app_in_process import app_in_process, redis_commands
from tests.app_server import a_customer, csrf_of, log_in

NOW_MS = (int(time.time()) - 60) * 1000


def login_commands(app, email: str, password: str) -> list[tuple[str, str]]:
    """The Redis commands of one login's POST; a session's key as `Login:*`."""
    client = app.client()
    token = csrf_of(client.get("/login").text)
    with redis_commands() as seen:
        client.post("/login", data={"email": email, "password": password, "csrf": token})
    # A new connection's HELLO and CLIENT, when the pool opens one, are not the login's.
    return [
        (name, "Login:*" if key.startswith("Login:") else key)
        for name, key in seen
        if name not in ("HELLO", "CLIENT")
    ]


@pytest.mark.parametrize("password", [app_data.PASSWORD, "a wrong password"])
def test_a_logins_redis_commands_are_the_same_with_10_and_10000_users(password):
    commands = {}
    for users in (10, 10_000):
        server = fakeredis.FakeServer()
        app_data.seed(fakeredis.FakeRedis(server=server), users, 0, NOW_MS)
        with app_in_process(server=server) as app:
            known = login_commands(app, app_data.user_email(7), password)
            unknown = login_commands(app, "nobody@test.com", password)
            commands[users] = (known, unknown)
    assert commands[10] == commands[10_000]
    known, unknown = commands[10]
    assert ("HGET", "UserEmail") in known and ("ZRANGE", "User") not in known + unknown
    assert len(known) <= 12 and len(unknown) <= 12  # a handful, whatever `User` holds


def test_a_start_reads_no_history():
    starts = {}
    for tests in (100, 20_000):
        server = fakeredis.FakeServer()
        app_data.seed(fakeredis.FakeRedis(server=server), 100, tests, NOW_MS)
        with redis_commands() as seen, app_in_process(server=server):
            pass
        # /health's PINGs, as often as it asks, and each new connection's HELLO and CLIENT
        # aside; the start's tasks run side by side, so their commands' order varies
        starts[tests] = sorted(c for c in seen if c[0] not in ("PING", "HELLO", "CLIENT"))
    assert starts[100] == starts[20_000]
    assert not {"ZRANGE", "ZSCAN", "HGETALL", "HVALS"} & {name for name, _ in starts[100]}


def older_redis(users: int, tests: int, owners: bool = True) -> fakeredis.FakeServer:
    """A Redis as the app left it before issue 35, a third of its test rows lost as well
    (tests from before that index), and without owners unless `owners`."""
    server = fakeredis.FakeServer()
    redis = fakeredis.FakeRedis(server=server)
    app_data.seed(redis, users, tests, NOW_MS, older=True)
    for c in range(app_data.customer_count(tests)):
        email = app_data.bench_customer(c)["email"]
        fields = redis.hkeys(f"TestsOf:{email}")
        redis.hdel(f"TestsOf:{email}", *fields[::3])
    if not owners:
        redis.delete("CustomerOwner", *(f"CustomersOf:{app_data.user_email(i)}" for i in range(2)))
    return server


def test_the_index_pass_indexes_older_data_in_batches_as_the_app_would_have(monkeypatch):
    monkeypatch.setattr(reindex, "BATCH", 7)
    tests = 400  # 8 customers, 50 tests each
    server = older_redis(users=30, tests=tests, owners=False)
    redis = fakeredis.FakeRedis(server=server)
    with app_in_process(server=server) as app:
        assert all(v.startswith(b"{") for v in redis.hvals("UserEmail"))
        assert {k: int(v) for k, v in redis.hgetall(INDEXED).items()} == {
            b"User": redis.zcard("User"),
            b"Customer": redis.zcard("Customer"),
            b"RapidStepTest": tests,
        }
        assert not redis.exists("UnindexedCustomers", "IndexPass")
        for c in range(app_data.customer_count(tests)):
            email = app_data.bench_customer(c)["email"]
            rows = sorted(
                (json.loads(r) for r in redis.hvals(f"TestsOf:{email}")),
                key=lambda r: r["stopTime"],
            )
            steps = [StepTest(r["stopTime"], r["testTime"]) for r in rows]
            expected = [None if risk is None else risk.score for _, risk in risk_after_each(steps)]
            assert len(rows) == tests // 8 and [r["score"] for r in rows] == expected
            latest = json.loads(redis.hget("LatestTest", email))
            assert latest["recent"] == [[s.stop_ms, s.duration_ms] for s in steps[-4:]]
            assert not redis.exists(f"Unindexed:{email}")
        # Customers without an owner: the admin has them now, so their emails stay taken.
        assert redis.hlen("CustomersOf:caregiver@test.com") == 8 + 1  # and Sam Test
        client, _ = log_in(app, app_data.user_email(5), app_data.PASSWORD)
        assert client.get("/timer").status_code == 200


def test_a_user_of_older_data_logs_in_before_the_pass_reached_them():
    server = older_redis(users=30, tests=100)

    async def lookup():  # the index pass not run: the user is found in `User`, by Redis
        store = Store(fakeredis.FakeAsyncRedis(server=server))
        found = await store.user(app_data.user_email(12))
        missing = await store.user("nobody@test.com")
        return found, missing, await store.client.hget("UserEmail", app_data.user_email(12))

    found, missing, indexed = asyncio.run(lookup())
    assert found["email"] == app_data.user_email(12) and missing is None
    assert json.loads(indexed) == found  # indexed on the way, for the next login


def test_a_member_pattern_matches_only_its_email_whatever_it_holds():
    redis = fakeredis.FakeRedis()
    emails = ["a*b@test.com", "a?b@test.com", "a[b]@test.com", "a\\b@test.com", "axb@test.com"]
    redis.zadd("User", {json.dumps({"email": e}, separators=(",", ":")): 0 for e in emails})
    for email in emails:
        found = [
            json.loads(m)["email"] for m, _ in redis.zscan_iter("User", match=member_pattern(email))
        ]
        assert found == [email]


def test_after_the_pass_a_test_is_scored_from_the_customers_last_tests():
    tests = 200
    server = older_redis(users=10, tests=tests)
    with app_in_process(server=server) as app:
        client, token = log_in(app, app_data.user_email(0), app_data.PASSWORD)
        customer = app_data.bench_customer(0)
        stop = NOW_MS + 30_000
        body = {"email": customer["email"], "startTime": stop - 70_000, "stopTime": stop,
                "totalSteps": 30}  # fmt: skip
        answer = client.post("/api/tests", json=body, headers={"X-CSRF-Token": token})
        assert answer.status_code == 201
        view = client.get(f"/api/customers/{customer['email']}").json()
        rows = sorted(view["tests"], key=lambda t: t["stopTime"])[-4:]
        before = [(r["testTime"]) for r in rows[:2]]
        after = [(r["testTime"]) for r in rows[2:]]
        expected = round((sum(before) - sum(after)) / 2000, 2)
        assert view["testCount"] == tests // 4 + 1  # (4 customers)
        assert view["latest"]["score"] == answer.json()["score"] == expected
        other = a_customer("Nina New")
        assert (
            client.post("/api/customers", json=other, headers={"X-CSRF-Token": token}).status_code
            == 201
        )
