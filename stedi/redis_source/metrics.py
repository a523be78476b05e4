"""The Redis source's metrics, in Prometheus' text format on a port of its own.

Read when Prometheus scrapes (nothing is computed between scrapes):
- records published and dead letters, confirmed by Kafka, since the source started;
- seconds since Kafka last confirmed a record (since start while none is confirmed);
- replication lag in bytes: Redis's replication offset (INFO replication, asked at
  scrape time) minus the last offset Kafka confirmed; absent while the source's
  position is on another replication id than Redis's (a resync is under way);
- whether the replication stream is established.

The port is STEDI_REDIS_SOURCE_METRICS_PORT (0: none), on STEDI_REDIS_SOURCE_METRICS_HOST
(loopback unless a container's Prometheus must reach it).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterator
from typing import TYPE_CHECKING

import redis
from prometheus_client import CollectorRegistry, start_http_server
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from stedi.redis_source.health import LinkState

if TYPE_CHECKING:
    from stedi.redis_source.publisher import RedisSource

log = logging.getLogger("stedi.redis_source")


def replication_lag(info: dict, replid: str, confirmed_offset: int) -> int | None:
    """Bytes of Redis's replication stream after the confirmed offset; None when the two
    are not on the same stream (Redis restarted, a full resync)."""
    if info.get("master_replid") != replid:
        return None
    return max(0, int(info["master_repl_offset"]) - confirmed_offset)


class SourceCollector(Collector):
    def __init__(self, source: RedisSource):
        self.source = source
        self.started = time.time()
        self.client: redis.Redis | None = None

    def _redis_info(self) -> dict | None:
        settings = self.source.settings
        try:
            if self.client is None:
                self.client = redis.Redis(
                    host=settings.redis_host,
                    port=settings.redis_port,
                    password=settings.redis_password,
                    socket_timeout=2,
                    socket_connect_timeout=2,
                )
            return self.client.info("replication")
        except redis.RedisError as exc:
            log.debug("metrics: no replication info from Redis: %s", exc)
            return None

    def collect(self) -> Iterator[Metric]:
        source = self.source
        yield CounterMetricFamily(
            "stedi_redis_source_records_published",
            "Records Kafka confirmed on the source's topic",
            source.published,
        )
        yield CounterMetricFamily(
            "stedi_redis_source_dead_letters",
            "Records too large for the topic, sent to the dead-letter topic",
            source.dead_letters,
        )
        last = source.last_confirmed_at or self.started
        yield GaugeMetricFamily(
            "stedi_redis_source_seconds_since_confirmed",
            "Seconds since Kafka last confirmed a record (since start while none was)",
            max(0.0, time.time() - last),
        )
        yield GaugeMetricFamily(
            "stedi_redis_source_streaming",
            "1 while the replication stream from Redis is established",
            1 if source.status.redis is LinkState.STREAMING else 0,
        )
        confirmed = source.confirmed
        info = self._redis_info() if confirmed is not None else None
        lag = None if info is None else replication_lag(info, confirmed.replid, confirmed.offset)
        if lag is not None:
            yield GaugeMetricFamily(
                "stedi_redis_source_replication_lag_bytes",
                "Redis's replication offset minus the last offset Kafka confirmed",
                lag,
            )


def serve(source: RedisSource) -> None:
    """Serves the source's metrics in a daemon thread; a port in use is logged, not fatal
    (the source's job is the topic, not its metrics)."""
    settings = source.settings
    port, host = settings.redis_source_metrics_port, settings.redis_source_metrics_host
    if port == 0:
        return
    registry = CollectorRegistry(auto_describe=False)
    registry.register(SourceCollector(source))
    try:
        start_http_server(port, addr=host, registry=registry)
    except OSError as exc:
        log.warning("metrics not served on %s:%d: %s", host, port, exc)
        return
    log.info("metrics on http://%s:%d/metrics", host, port)
