"""The Redis source's metrics: served on their own port in Prometheus' text format (read back
with prometheus_client's parser), from the source's own totals and Redis's offset."""

import dataclasses
import socket
import time

import httpx
from prometheus_client.parser import text_string_to_metric_families

from stedi.config import Settings
from stedi.redis_source import metrics
from stedi.redis_source.health import LinkState
from stedi.redis_source.metrics import SourceCollector, replication_lag
from stedi.redis_source.publisher import RedisSource
from stedi.redis_source.state import Position
from tests.app_server import free_port

SOURCE_METRICS = {
    "stedi_redis_source_records_published",
    "stedi_redis_source_dead_letters",
    "stedi_redis_source_seconds_since_confirmed",
    "stedi_redis_source_streaming",
    "stedi_redis_source_replication_lag_bytes",
}


def a_source(tmp_path, port: int) -> RedisSource:
    settings = dataclasses.replace(
        Settings(),
        redis_source_state=str(tmp_path / "source.json"),
        redis_source_metrics_port=port,
        redis_source_metrics_host="127.0.0.1",
    )
    return RedisSource(settings)


def values(text: str) -> dict[str, float]:
    return {
        sample.name: sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }


def test_replication_lag_is_redis_offset_minus_the_confirmed_one_on_the_same_stream():
    info = {"master_replid": "r1", "master_repl_offset": 1500}
    assert replication_lag(info, "r1", 1200) == 300
    assert replication_lag(info, "r1", 1500) == 0
    assert replication_lag(info, "r0", 1200) is None  # another stream: no lag to tell


def test_the_source_serves_its_totals_and_lag_on_its_port(tmp_path, monkeypatch):
    port = free_port()
    source = a_source(tmp_path, port)
    source.published, source.dead_letters = 42, 2
    source.confirmed = Position("r1", 1200)
    source.last_confirmed_at = time.time() - 30
    source.status.redis = LinkState.STREAMING
    monkeypatch.setattr(
        SourceCollector,
        "_redis_info",
        lambda self: {"master_replid": "r1", "master_repl_offset": 1264},
    )
    metrics.serve(source)
    response = httpx.get(f"http://127.0.0.1:{port}/metrics", timeout=5)
    assert response.status_code == 200
    found = {family.name for family in text_string_to_metric_families(response.text)}
    assert SOURCE_METRICS <= found
    got = values(response.text)
    assert got["stedi_redis_source_records_published_total"] == 42
    assert got["stedi_redis_source_dead_letters_total"] == 2
    assert got["stedi_redis_source_replication_lag_bytes"] == 64
    assert got["stedi_redis_source_streaming"] == 1
    assert 30 <= got["stedi_redis_source_seconds_since_confirmed"] < 300


def test_without_a_confirmed_position_or_redis_there_is_no_lag_and_age_runs_from_start(tmp_path):
    source = a_source(tmp_path, 0)
    source.settings = dataclasses.replace(source.settings, redis_port=free_port())  # no Redis
    collector = SourceCollector(source)
    collector.started -= 12
    got = {m.name: m.samples[0].value for m in collector.collect()}
    assert "stedi_redis_source_replication_lag_bytes" not in got
    assert got["stedi_redis_source_streaming"] == 0
    assert got["stedi_redis_source_seconds_since_confirmed"] >= 12
    source.confirmed = Position("r1", 10)  # a position, but Redis does not answer
    got = {m.name for m in collector.collect()}
    assert "stedi_redis_source_replication_lag_bytes" not in got


def test_a_port_in_use_leaves_the_source_running_without_metrics(tmp_path, caplog):
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        metrics.serve(a_source(tmp_path, port))  # no exception
    assert f"metrics not served on 127.0.0.1:{port}" in caplog.text
