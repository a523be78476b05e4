"""The bench's app clients (bench/app_clients.py) against the real app, served on a loopback
port by uvicorn in a thread, on fakeredis, its graph fed by the test through the app's own
record-to-point code: every viewer gets every point, the caregivers' and the logins'
answers are the ones the bench expects. Counts, never speed."""

import asyncio
import contextlib
import dataclasses
import secrets
import threading
import time

import fakeredis
import uvicorn

from bench import app_clients, app_data
from stedi.app.kafka_io import new_points
from stedi.app.services import Services
from stedi.app.store import Store
from stedi.app.web import create_app
from stedi.config import Settings
from stedi.stack.drivers import free_port
from tests.app_in_process import NO_KAFKA, QuietFeed, QuietQuality, SentScores

TESTS = 2 * app_data.TESTS_PER_CUSTOMER * app_data.CUSTOMERS_PER_CAREGIVER  # two caregivers


@contextlib.contextmanager
def served_app():
    """The app on a free loopback port, trusting the loopback's X-Forwarded-For as the
    bench's app processes do: (its URL, its graph feed)."""
    settings = dataclasses.replace(
        Settings(), simulate=False, trusted_proxy="127.0.0.1", secret_key=secrets.token_hex(16)
    )
    redis = fakeredis.FakeServer()
    app_data.seed(fakeredis.FakeRedis(server=redis), 30, TESTS, int(time.time() * 1000))
    client = fakeredis.FakeAsyncRedis(server=redis)
    feed = QuietFeed(NO_KAFKA, settings.risk_topic)
    services = Services(
        client, Store(client), SentScores("events"), feed, QuietQuality(NO_KAFKA, "quality")
    )
    port = free_port()
    server = uvicorn.Server(
        uvicorn.Config(
            create_app(settings, services),
            host="127.0.0.1",
            port=port,
            log_level="warning",
            proxy_headers=True,
            forwarded_allow_ips="127.0.0.1",
        )
    )
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not server.started:
        assert time.monotonic() < deadline and thread.is_alive(), "the app did not start"
        time.sleep(0.02)
    try:
        yield f"http://127.0.0.1:{port}", feed
    finally:
        server.should_exit = True
        thread.join(30)


def test_every_viewer_gets_every_point_of_the_apps_live_stream():
    with served_app() as (url, feed):

        def produce() -> list[int]:
            ids = list(range(1, 21))
            for point in ids:
                for shown in new_points([app_clients.risk_record(point)], feed.shown):
                    feed.loop.call_soon_threadsafe(feed._deliver, shown)
            return ids

        watched = asyncio.run(app_clients.viewers([url, url], 12, 5, produce, 0.2, 10))
    assert len(watched) == 12
    assert [v.error for v in watched] == [None] * 12
    assert all(sorted(v.received) == list(range(1, 21)) for v in watched)


def test_the_caregivers_and_the_logins_get_the_answers_the_bench_expects():
    load = app_clients.Load(clients=2, seconds=2, think_s=0.05, login_rate=2, users=30)
    with served_app() as (url, _):
        timings = asyncio.run(app_clients.clinic([url], TESTS, load))
        alone = asyncio.run(app_clients.logins_alone([url], 30, 2))
    assert timings.errors == [] and alone.errors == []
    assert len(timings.seconds["login"]) == 4 and len(alone.seconds["login"]) == 2
    posted = len(timings.seconds["post_test"])
    assert posted > 0 and len(timings.seconds["timer_page"]) >= posted
