"""`make up` / `make down`: idempotent, and data survives a restart."""

import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from stedi.stack import services
from stedi.stack.process import Service, tagged_processes
from tests.app_server import free_port
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


@pytest.fixture
def own_stack(tmp_path):
    """Environment of a second stack of this checkout: its own folder and free ports."""
    env = {
        **os.environ,
        "STEDI_STACK_DIR": str(tmp_path / "stack"),
        "REDIS_PORT": str(free_port()),
        "KAFKA_BOOTSTRAP_SERVERS": f"localhost:{free_port()}",
        "STEDI_KAFKA_CONTROLLER_PORT": str(free_port()),
    }
    yield env
    subprocess.run([sys.executable, "-m", "stedi.stack", "down"], env=env, timeout=120)


def stack_processes(env: dict) -> list:
    return list(tagged_processes(str(Path(env["STEDI_STACK_DIR"]).resolve()) + ":"))


def test_make_down_after_the_launcher_was_killed_while_kafka_starts_leaves_nothing(own_stack):
    launcher = subprocess.Popen(
        [sys.executable, "-m", "stedi.stack", "up"],
        env=own_stack,
        cwd=services.ROOT,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert "redis ready" in launcher.stdout.readline() + launcher.stdout.readline()
        kafka = Service("kafka", Path(own_stack["STEDI_STACK_DIR"]).resolve())
        deadline = time.monotonic() + 60
        while kafka.pid() is None and time.monotonic() < deadline:
            time.sleep(0.1)
        assert kafka.pid() is not None, "kafka never started"
    finally:
        launcher.kill()  # SIGKILL: no cleanup of any kind
        launcher.wait()
    assert {tag.rsplit(":", 1)[1] for _, tag in stack_processes(own_stack)} >= {"redis", "kafka"}

    result = subprocess.run(
        [sys.executable, "-m", "stedi.stack", "down"], env=own_stack, capture_output=True,
        text=True, timeout=120,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert stack_processes(own_stack) == []

    result = subprocess.run(
        [sys.executable, "-m", "stedi.stack", "up"], env=own_stack, capture_output=True,
        text=True, timeout=300,
    )  # fmt: skip
    assert result.returncode == 0, result.stdout + result.stderr
    assert "redis source running" in result.stdout


def test_make_up_names_the_process_that_holds_a_port(own_stack):
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", int(own_stack["REDIS_PORT"])))
        sock.listen()
        result = subprocess.run(
            [sys.executable, "-m", "stedi.stack", "up"], env=own_stack, capture_output=True,
            text=True, timeout=120,
        )  # fmt: skip
    assert result.returncode != 0
    assert f"port {own_stack['REDIS_PORT']} is taken by another process (pid {os.getpid()}:" in (
        result.stderr
    )
