"""`make up` / `make down`: idempotent, and data survives a restart."""

import subprocess
import sys

import pytest

from stedi.stack import services
from tests.stack_support import create_topics, produce, read_all

pytestmark = pytest.mark.integration


def stack_command(command: str) -> str:
    result = subprocess.run(
        [sys.executable, "-m", "stedi.stack", command],
        capture_output=True,
        text=True,
        timeout=300,
        cwd=services.ROOT,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    return result.stdout


def pids():
    return [s.pid() for s in (services.REDIS, services.KAFKA, services.REDIS_SOURCE)]


def test_up_twice_is_a_no_op(stack):
    before = pids()
    output = stack_command("up")
    assert pids() == before
    assert "redis already running" in output and "kafka already running" in output


def test_down_then_up_keeps_topic_data_and_redis_data(stack, redis_client, unique):
    topic = f"keep-{unique}"
    create_topics(stack, topic)
    produce(stack, topic, ["kept"])
    redis_client.zadd(f"keep-{unique}", {"member": 0})

    stack_command("down")
    assert pids() == [None, None, None]
    assert not services.port_open(services.kafka_port(stack))
    assert not services.port_open(stack.redis_port)
    stack_command("up")

    assert [r.value for r in read_all(stack, topic, 1)] == [b"kept"]
    assert redis_client.zrange(f"keep-{unique}", 0, -1) == [b"member"]
