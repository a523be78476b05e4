"""The STEDI app in-process, for HTTP tests that need no live stack.

Starlette's TestClient runs the app's lifespan on its own event loop; the app's
services are fakeredis (one server per app, also readable from the test) and
Kafka fakes that keep what the app sends. `client()` gives another browser (its
own cookies) on the same app, as AppServer.client() does for a real server, so the
HTTP steps of tests/app_server.py serve both.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import time
import warnings
from collections.abc import Iterator

import fakeredis
import httpx
from fakeredis._socket import AsyncFakeSocket

with warnings.catch_warnings():
    # Starlette would rather have httpx2; the tests' steps and AppServer use the pinned
    # httpx, whose clients share this TestClient's transport (see InProcessApp.client).
    warnings.filterwarnings("ignore", "Using `httpx` with `starlette.testclient`")
    from starlette.testclient import TestClient

from stedi.app.kafka_io import RiskFeed, RiskPublisher
from stedi.app.quality import RiskQuality
from stedi.app.services import Services
from stedi.app.store import SAMPLE_CUSTOMER, Store
from stedi.app.web import create_app
from stedi.config import Settings
from tests.app_server import ADMIN_EMAIL, ADMIN_PASSWORD

NO_KAFKA = "kafka.invalid:9092"  # never contacted: the fakes below do no I/O


class SentScores(RiskPublisher):
    """The app's publisher without Kafka: what it sends stays in `sent` as (key, value)."""

    def __init__(self, topic: str):
        super().__init__(NO_KAFKA, topic)
        self.sent: list[tuple[bytes, bytes]] = []

    def _send(self, key: bytes, value: bytes) -> None:
        self.sent.append((key, value))


class QuietFeed(RiskFeed):
    """The live graph's feed with no topic to read: points come only from `_deliver`."""

    def start(self) -> None:
        self.loop = asyncio.get_running_loop()


class QuietQuality(RiskQuality):
    def start(self) -> None:
        pass


@dataclasses.dataclass
class InProcessApp:
    test_client: TestClient
    redis: fakeredis.FakeRedis  # the app's Redis, read synchronously by the test
    publisher: SentScores

    def client(self) -> httpx.Client:
        """A browser of its own (cookies) on this app; redirects are not followed."""
        return httpx.Client(
            transport=self.test_client._transport, base_url="http://testserver", timeout=10
        )


def index_pass_done(test_client: TestClient) -> bool:
    task = test_client.app.state.index_pass.task
    return task is not None and task.done()


@contextlib.contextmanager
def app_in_process(
    server: fakeredis.FakeServer | None = None, **settings_changes
) -> Iterator[InProcessApp]:
    """The app, started (admin created, history loaded) and stopped around the block, on a
    fresh fake Redis or on `server` (the Redis of an app before: a restart)."""
    settings = dataclasses.replace(
        Settings(),
        admin_user=ADMIN_EMAIL,
        admin_password=ADMIN_PASSWORD,
        simulate=False,
        **settings_changes,
    )
    server = server or fakeredis.FakeServer()
    client = fakeredis.FakeAsyncRedis(server=server)
    publisher = SentScores(settings.events_topic)
    services = Services(
        redis=client,
        store=Store(client, customers_per_user=settings.customers_per_user),
        publisher=publisher,
        feed=QuietFeed(NO_KAFKA, settings.risk_topic, settings.stream_buffer),
        quality=QuietQuality(NO_KAFKA, settings.quality_topic),
    )
    redis = fakeredis.FakeRedis(server=server)
    with TestClient(create_app(settings, services)) as test_client:
        deadline = time.monotonic() + 30
        # The first start runs in the background; /health says up once it is done.
        while test_client.get("/health").status_code != 200:
            assert time.monotonic() < deadline, "the app's first start did not finish"
            time.sleep(0.01)
        # Then the index pass (older data, in the background): tests read its result.
        while not index_pass_done(test_client):
            assert time.monotonic() < deadline, "the index pass did not finish"
            time.sleep(0.01)
        assert redis.hexists("CustomerOwner", SAMPLE_CUSTOMER["email"])
        yield InProcessApp(test_client, redis, publisher)


@contextlib.contextmanager
def redis_commands() -> Iterator[list[tuple[str, str]]]:
    """Each command the app's Redis runs in the block, as (name, first argument: the key
    for the commands the app reads with). Only the app's asyncio client is counted, not a
    test's synchronous one. (fakeredis' socket is private API: pinned in pyproject.toml.)"""
    seen: list[tuple[str, str]] = []
    process = AsyncFakeSocket._process_command

    def counted(self, fields: list[bytes]) -> None:
        if fields:
            names = [f.decode(errors="replace") for f in fields[:2]]
            seen.append((names[0].upper(), names[1] if len(names) > 1 else ""))
        process(self, fields)

    AsyncFakeSocket._process_command = counted
    try:
        yield seen
    finally:
        AsyncFakeSocket._process_command = process
