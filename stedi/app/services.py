"""What the app talks to: Redis, through the store, and Kafka, through a publisher and two
readers. `connect` builds the real ones from the settings; tests give `create_app` their
own (a Redis client of their choice, Kafka fakes), so the app runs in-process.
"""

from __future__ import annotations

from dataclasses import dataclass

import redis.asyncio as aioredis
from redis.asyncio.retry import Retry
from redis.backoff import ExponentialWithJitterBackoff

from stedi.app.kafka_io import RiskFeed, RiskPublisher
from stedi.app.quality import RiskQuality
from stedi.app.store import Store
from stedi.config import Settings

# redis-py's default retries a refused connection 10 times, up to a second apart: a page
# would hang for seconds while Redis is away. Three quick retries ride out a blip; past
# them the page answers 503 at once (and /health already says Redis is down).
REDIS_RETRY = Retry(ExponentialWithJitterBackoff(base=0.05, cap=0.2), retries=3)


@dataclass(frozen=True)
class Services:
    redis: aioredis.Redis  # the store's client; closed at shutdown
    store: Store
    publisher: RiskPublisher  # risk scores out to the events topic
    feed: RiskFeed  # the output topic in, for the live graph
    quality: RiskQuality  # the risk-score job's checks in, for the graph page


def connect(settings: Settings) -> Services:
    """The real services; nothing is contacted before the app starts them."""
    client = aioredis.Redis(
        host=settings.redis_host,
        port=settings.redis_port,
        password=settings.redis_password,
        socket_timeout=5,
        socket_connect_timeout=2,
        retry=REDIS_RETRY,
    )
    servers = settings.kafka_bootstrap_servers
    return Services(
        redis=client,
        store=Store(client, customers_per_user=settings.customers_per_user),
        publisher=RiskPublisher(servers, settings.events_topic),
        feed=RiskFeed(servers, settings.risk_topic, settings.stream_buffer),
        quality=RiskQuality(servers, settings.quality_topic),
    )
