"""The simulator under abuse, against real Redis and Kafka: names never run out, toggling it
100 times on a crowded Redis leaves the app answering, and simulations are per user."""

import json
import threading
import time
import uuid

import httpx
import pytest

from stedi.app.simulator import CUSTOMERS_PER_ACTIVATION, FIRST_NAMES, LAST_NAMES
from tests.app_server import forget_owner, new_user

pytestmark = pytest.mark.integration

ANSWER_SECONDS = 1.0  # the figure: the app answers within 1 s
CROWD = 3000  # simulated customers already in Redis: every pool name and then some
ACTIVATIONS = 100


def simulated_customer(email: str) -> dict:
    name = email.split("@")[0].replace(".", " ")
    return {"customerName": name, "email": email, "phone": "8015551212", "birthDay": "1960-01-01"}


@pytest.fixture
def crowded_redis(redis_client):
    """Thousands of simulated customers of another user, every `First.Last` email among them."""
    owner = f"crowd.{uuid.uuid4().hex[:8]}@test.com"
    names = [(f, last) for f in FIRST_NAMES for last in LAST_NAMES]
    emails = [f"{f}.{last}@test.com" for f, last in names]
    emails += [f"{f}.{last}{n}@test.com" for n in (2, 3) for f, last in names]
    emails = emails[:CROWD]
    for start in range(0, len(emails), 500):
        batch = emails[start : start + 500]
        pipe = redis_client.pipeline(transaction=False)
        for email in batch:
            pipe.hsetnx("CustomerOwner", email, owner)
        claimed = [e for e, ok in zip(batch, pipe.execute(), strict=True) if ok]
        customers = {e: json.dumps(simulated_customer(e)) for e in claimed}
        if customers:
            redis_client.hset(f"CustomersOf:{owner}", mapping=customers)
            redis_client.zadd("Customer", {c: 0 for c in customers.values()})
    assert redis_client.hlen("CustomerOwner") >= CROWD
    assert all(redis_client.hexists("CustomerOwner", e) for e in emails)
    yield set(emails)
    forget_owner(redis_client, owner)


class HealthProbe(threading.Thread):
    def __init__(self, url: str):
        super().__init__(daemon=True)
        self.url, self.done = url, threading.Event()
        self.answers, self.failures = [], []

    def run(self):
        while not self.done.is_set():
            try:
                response = httpx.get(f"{self.url}/health", timeout=ANSWER_SECONDS)
                self.answers.append(response.status_code)
            except httpx.HTTPError as exc:
                self.failures.append(repr(exc))
            time.sleep(0.1)


def switch(client: httpx.Client, token: str, active: bool) -> dict:
    response = client.post(
        "/api/simulation", json={"active": active}, headers={"X-CSRF-Token": token}
    )
    assert response.status_code == 200
    return response.json()


def test_a_hundred_activations_on_a_crowded_redis_leave_the_app_answering(
    app, crowded_redis, redis_client
):
    client, token, user = new_user(app)
    probe = HealthProbe(app.url)
    probe.start()
    try:
        for _ in range(ACTIVATIONS):
            assert switch(client, token, True)["active"] is True
            assert switch(client, token, False)["active"] is False
    finally:
        probe.done.set()
        probe.join()
    try:
        assert probe.failures == [] and probe.answers and set(probe.answers) == {200}
        assert httpx.get(f"{app.url}/health", timeout=ANSWER_SECONDS).status_code == 200
        mine = client.get("/api/customers", timeout=ANSWER_SECONDS).json()
        emails = [c["email"] for c in mine]
        assert len(emails) == len(set(emails)) == ACTIVATIONS * CUSTOMERS_PER_ACTIVATION
        assert not set(emails) & crowded_redis  # every new one has an email of its own
        assert all(e.endswith("@test.com") for e in emails)
    finally:
        forget_owner(redis_client, user)


def test_simulations_are_per_user(app, redis_client):
    first, first_token, first_user = new_user(app)
    second, second_token, second_user = new_user(app)
    try:
        assert switch(first, first_token, True)["active"] is True
        assert second.get("/api/simulation").json()["active"] is False
        assert switch(second, second_token, False)["active"] is False
        assert first.get("/api/simulation").json()["active"] is True
        assert len(first.get("/api/customers").json()) == CUSTOMERS_PER_ACTIVATION
        assert second.get("/api/customers").json() == []
        simulated = first.get("/api/customers").json()[0]["email"]
        assert second.get(f"/api/customers/{simulated}").status_code == 404
        assert redis_client.hget("CustomerOwner", simulated).decode() == first_user
    finally:
        switch(first, first_token, False)
        forget_owner(redis_client, first_user)
        forget_owner(redis_client, second_user)
