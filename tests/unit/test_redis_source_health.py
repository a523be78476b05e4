"""The source's health: its verdict, the health file, `ready()` and the CLI's exit code."""

import json
import threading
import time

from stedi.redis_source import health
from stedi.redis_source.health import (
    Heartbeat,
    LinkState,
    Status,
    check,
    health_path,
    ready,
)


def streaming_status() -> Status:
    status = Status(stall_limit=60)
    status.redis, status.position = LinkState.STREAMING, "r1@10"
    status.kafka_probe_ok_at = time.monotonic()
    return status


def test_streaming_with_kafka_answering_is_ready():
    assert streaming_status().verdict() == (True, "streaming r1@10; Kafka connected")


def test_each_broken_link_or_a_stall_is_unhealthy_with_its_reason():
    cases = {
        "full resync": lambda s: setattr(s, "redis", LinkState.SYNCING),
        "not established (retrying); last error: ConnectionError": lambda s: (
            setattr(s, "redis", LinkState.RETRYING),
            setattr(s, "last_error", "ConnectionError: closed"),
        ),
        "records not confirmed": lambda s: setattr(s, "delivery_error", "expired"),
        "no metadata answer": lambda s: setattr(s, "kafka_probe_ok_at", time.monotonic() - 60),
        "no progress": lambda s: setattr(s, "progress_at", time.monotonic() - 120),
    }
    for reason, breaks in cases.items():
        status = streaming_status()
        breaks(status)
        ok, said = status.verdict()
        assert not ok and reason in said, (reason, said)


def test_the_health_file_sits_next_to_the_state_file():
    assert health_path("/var/lib/stedi/redis-source.json") == (
        "/var/lib/stedi/redis-source.health.json"
    )


def test_check_reads_the_heartbeat_and_refuses_a_missing_or_stale_file(tmp_path):
    state = str(tmp_path / "source.json")
    assert check(state) == (
        False,
        f"no health file {health_path(state)}: the Redis source is not running",
    )
    record = {"heartbeat": time.time(), "ready": True, "reason": "streaming r1@10"}
    with open(health_path(state), "w") as f:
        json.dump(record, f)
    assert check(state) == (True, "streaming r1@10") and ready(state)
    with open(health_path(state), "w") as f:
        json.dump({**record, "heartbeat": time.time() - 30}, f)
    ok, reason = check(state, max_age_s=10)
    assert not ok and "no heartbeat for 30 s" in reason


def test_the_cli_exits_0_when_healthy_and_1_with_the_reason_otherwise(tmp_path, capsys):
    state = str(tmp_path / "source.json")
    assert health.main(["--state", state]) == 1
    assert "unhealthy: no health file" in capsys.readouterr().out
    with open(health_path(state), "w") as f:
        json.dump({"heartbeat": time.time(), "ready": True, "reason": "streaming"}, f)
    assert health.main(["--state", state]) == 0
    assert capsys.readouterr().out == "healthy: streaming\n"


def test_the_heartbeat_writes_the_verdict_until_stopped_and_then_says_stopped(tmp_path):
    state = str(tmp_path / "source.json")
    stop = threading.Event()
    status = streaming_status()
    beat = Heartbeat(status, state, probe=lambda: None, stop=stop)
    beat.start()
    deadline = time.monotonic() + 10
    while not ready(state) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert ready(state)
    stop.set()
    beat.thread.join(10)
    assert check(state) == (False, "stopped")


def test_a_kafka_probe_that_fails_makes_the_source_unhealthy(tmp_path):
    state = str(tmp_path / "source.json")
    stop = threading.Event()
    status = streaming_status()
    status.kafka_probe_ok_at = 0.0

    def probe():
        raise TimeoutError("metadata request timed out")

    beat = Heartbeat(status, state, probe=probe, stop=stop)
    beat.start()
    deadline = time.monotonic() + 10
    ok, reason = check(state)
    while "metadata request timed out" not in reason and time.monotonic() < deadline:
        time.sleep(0.1)
        ok, reason = check(state)
    stop.set()
    beat.thread.join(10)
    assert not ok and "Kafka: no metadata answer (metadata request timed out)" in reason
