"""Runs the STEDI app (python -m stedi.app) as a real server process for tests, and
the HTTP steps app tests share (log in, sign up, CSRF tokens, stored data).

The steps take an app with a `client()` method: this AppServer, or the in-process
app of tests/app_in_process.py."""

from __future__ import annotations

import itertools
import json
import os
import re
import secrets
import sys
import time
import uuid
from pathlib import Path

import httpx
import redis

from stedi.stack.drivers import free_port
from tests.background import Background

ADMIN_EMAIL, ADMIN_PASSWORD = "caregiver@test.com", "correct horse battery"


class AppServer:
    def __init__(self, env: dict, log_path: Path, ready_status: int = 200):
        """Starts the app on a free port; ready when /health answers `ready_status`
        (503: Redis away). A variable given as None in `env` is unset."""
        port = free_port()
        self.url = f"http://127.0.0.1:{port}"
        self.log_path, self.env = log_path, env
        full_env = {
            **os.environ,
            "STEDI_APP_PORT": str(port),
            "STEDI_ADMIN_USER": ADMIN_EMAIL,
            "STEDI_ADMIN_PASSWORD": ADMIN_PASSWORD,
            **env,
        }
        full_env = {k: v for k, v in full_env.items() if v is not None}  # None: unset it
        forget_attempts_in(full_env)
        self.process = Background([sys.executable, "-m", "stedi.app"], full_env, log_path)
        self.process.wait_until(lambda: self._health() == ready_status, 30, "an answer on /health")

    def _health(self) -> int | None:
        try:
            return httpx.get(f"{self.url}/health", timeout=3).status_code
        except httpx.HTTPError:
            return None

    @property
    def urls(self) -> list[str]:
        return [self.url]

    def client(self) -> httpx.Client:
        """A browser of its own (cookies) on this server; redirects are not followed."""
        return httpx.Client(base_url=self.url, timeout=10)

    def stop(self) -> None:
        self.process.stop()


class AppProcesses:
    """`count` app processes on one Redis, one secret key, served as one app: each new
    client (each `url` asked for) goes to the next process in turn, as behind a balancer."""

    def __init__(self, count: int, env: dict, log_dir: Path):
        self.env = {"STEDI_SECRET_KEY": secrets.token_urlsafe(32), **env}
        self.servers: list[AppServer] = []
        try:
            for i in range(count):
                self.servers.append(AppServer(self.env, log_dir / f"app-{i}.log"))
        except BaseException:
            self.stop()
            raise
        self.turn = itertools.count()

    @property
    def url(self) -> str:
        return self.servers[next(self.turn) % len(self.servers)].url

    @property
    def urls(self) -> list[str]:
        return [s.url for s in self.servers]

    def client(self) -> httpx.Client:
        return httpx.Client(base_url=self.url, timeout=10)

    def stop(self) -> None:
        for server in self.servers:
            server.stop()


# --- what app tests do through HTTP ----------------------------------------------------
def stored(redis_client, entity: str) -> list:
    """The JSON members of a sorted set (other tests may leave non-JSON members)."""
    members = []
    for raw in redis_client.zrange(entity, 0, -1):
        try:
            members.append(json.loads(raw))
        except ValueError:
            continue
    return members


def csrf_of(html: str) -> str:
    return re.search(r'name="csrf-token" content="([^"]+)"', html).group(1)


def form_token(client: httpx.Client, path: str) -> str:
    """The CSRF token of the form page at `path`."""
    return csrf_of(client.get(path).text)


def log_in(app, email: str, password: str) -> tuple[httpx.Client, str]:
    client = app.client()
    token = csrf_of(client.get("/login").text)
    response = client.post("/login", data={"email": email, "password": password, "csrf": token})
    assert response.status_code == 303 and response.headers["location"] == "/timer"
    return client, csrf_of(client.get("/timer").text)


def logged_in(app) -> tuple[httpx.Client, str]:
    return log_in(app, ADMIN_EMAIL, ADMIN_PASSWORD)


def new_user(app) -> tuple[httpx.Client, str, str]:
    """A fresh account, signed up and logged in: (client, CSRF token, email)."""
    email, password = f"user.{uuid.uuid4().hex[:10]}@test.com", "a long enough password"
    client = app.client()
    token = csrf_of(client.get("/signup").text)
    fields = {"userName": "Tess", "email": email, "password": password, "csrf": token}
    assert client.post("/signup", data=fields).status_code == 303
    client, token = log_in(app, email, password)
    return client, token, email


def a_customer(name: str = "Ann Api", born: str = "1960-02-03") -> dict:
    email = f"{name.split()[0].lower()}.{uuid.uuid4().hex[:10]}@test.com"
    return {"customerName": name, "email": email, "phone": "8015551212", "birthDay": born}


def a_test(email: str, duration_ms: int = 60_000) -> dict:
    stop = int(time.time() * 1000) - 1000
    return {"email": email, "startTime": stop - duration_ms, "stopTime": stop, "totalSteps": 30}


def index_pass_done(redis_client, timeout: float = 30) -> None:
    """Waits until the app's background index pass (stedi/app/reindex.py) has indexed every
    member of User, Customer and RapidStepTest: each count in `Indexed` is its set's size."""
    deadline = time.monotonic() + timeout
    while True:
        counts = redis_client.hgetall("Indexed")
        sizes = {k: redis_client.zcard(k) for k in ("User", "Customer", "RapidStepTest")}
        busy = redis_client.exists("IndexPass", "UnindexedCustomers")
        if not busy and all(int(counts.get(k.encode(), 0)) == n for k, n in sizes.items()):
            return
        assert time.monotonic() < deadline, f"the index pass did not finish: {counts} {sizes}"
        time.sleep(0.05)


def forget_attempts(redis_client) -> None:
    """Every login and sign-up counter (stedi/app/attempts.py): they live in Redis, for every
    app process, so a test that counts attempts starts from zero."""
    keys = list(redis_client.scan_iter(match="Attempts:*", count=1000))
    if keys:
        redis_client.delete(*keys)


def forget_attempts_in(env: dict) -> None:
    """forget_attempts on the Redis `env` names, if one answers: an app server a test starts
    counts from zero, as a process of its own did when the counters were in the process."""
    client = redis.Redis(
        host=env.get("REDIS_HOST") or "localhost",
        port=int(env.get("REDIS_PORT") or 6379),
        password=env.get("REDIS_PASSWORD") or None,
        socket_connect_timeout=2,
    )
    try:
        forget_attempts(client)
    except redis.ConnectionError:
        pass  # no Redis there (a test of the app without it): nothing to forget
    finally:
        client.close()


def forget_owner(redis_client, owner: str) -> None:
    """Removes an owner's customers (this test's data) from the shared Redis. Their emails
    stay claimed: a later customer under one of them would get another birth year than the
    one the join already holds for it."""
    own = redis_client.hgetall(f"CustomersOf:{owner}")
    for start in range(0, len(own), 500):
        emails = list(own)[start : start + 500]
        redis_client.zrem("Customer", *(own[e] for e in emails))
    redis_client.delete(f"CustomersOf:{owner}")
