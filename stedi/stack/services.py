"""The local stack of `make up`: Redis, Kafka and the Redis source, started, checked, stopped.

Each service is a process with a PID file and a log file in STEDI_STACK_DIR
(default build/stack); stedi/stack/process.py says how a process is known to be
ours. Everything the stack starts carries this checkout's tag, so `make down`
finds and stops it even when a PID file was never written.
"""

from __future__ import annotations

import os
import shutil
import sys
from pathlib import Path

from stedi.config import Settings
from stedi.redis_source import health
from stedi.stack import kafka_server, redis_server
from stedi.stack.kafka_server import create_topics, kafka_port, stack_topics
from stedi.stack.process import Service, StackError, port_open, stop_pids, tagged_processes, tail

__all__ = [
    "KAFKA",
    "REDIS",
    "REDIS_SOURCE",
    "ROOT",
    "STACK_DIR",
    "Service",
    "StackError",
    "clean",
    "create_topics",
    "down",
    "is_up",
    "kafka_port",
    "log_path",
    "port_open",
    "stack_topics",
    "start_kafka",
    "start_redis",
    "start_redis_source",
    "status",
    "tail",
    "up",
]

ROOT = Path(__file__).resolve().parents[2]
STACK_DIR = Path(os.environ.get("STEDI_STACK_DIR", ROOT / "build" / "stack")).resolve()

REDIS = Service("redis", STACK_DIR)
KAFKA = Service("kafka", STACK_DIR)
REDIS_SOURCE = Service("redis-source", STACK_DIR)
STACK = (REDIS, KAFKA, REDIS_SOURCE)  # in start order
SOURCE_STATE = STACK_DIR / "redis-source.json"


def log_path(name: str) -> Path:
    return STACK_DIR / "logs" / f"{name}.log"


def start_redis(settings: Settings) -> None:
    redis_server.start_redis(REDIS, settings)


def start_kafka(settings: Settings) -> None:
    kafka_server.start_kafka(KAFKA, settings)


def start_redis_source() -> None:
    if (pid := REDIS_SOURCE.pid()) is not None:
        print(f"   redis source already running (pid {pid})")
        return
    state = SOURCE_STATE
    Path(health.health_path(str(state))).unlink(missing_ok=True)  # a previous run's verdict
    REDIS_SOURCE.start(
        [sys.executable, "-m", "stedi.redis_source"],
        env={"STEDI_REDIS_SOURCE_STATE": str(state), "PYTHONUNBUFFERED": "1"},
        cwd=ROOT,
    )
    # Ready: streaming from Redis (snapshot published, if any) and connected to Kafka.
    REDIS_SOURCE.wait_until(lambda: health.ready(str(state)), "connect to Redis and Kafka", 180)
    print(f"   redis source running (pid {REDIS_SOURCE.pid()}), log {REDIS_SOURCE.log}")


def up(settings: Settings) -> list[Service]:
    """Start what is not running; returns the services this call started."""
    print(f">> local stack in {STACK_DIR}")
    running_before = {s.name for s in STACK if s.pid() is not None}
    start_redis(settings)
    start_kafka(settings)
    create_topics(settings)
    start_redis_source()
    return [s for s in STACK if s.name not in running_before]


def leftovers() -> list[tuple[int, str]]:
    """Processes of this checkout's stack that are none of its services' own
    (e.g. the jobs of a `make run` that was killed)."""
    own = {s.tag for s in STACK}
    return [(pid, tag) for pid, tag in tagged_processes(f"{STACK_DIR}:") if tag not in own]


def down(only: list[Service] | None = None) -> None:
    """Stop the stack's services (or `only` these), the last started first.

    A full `down` also stops every other process this checkout's stack started.
    """
    if only is None:
        strays = leftovers()
        if strays:
            stop_pids([pid for pid, _ in strays], timeout=30)
            for pid, tag in strays:
                print(f"   stopped {tag.rsplit(':', 1)[1]} (pid {pid})")
    for service in reversed(STACK):
        if (only is None or service in only) and service.stop():
            print(f"   stopped {service.name}")


def is_up() -> bool:
    return all(s.pid() is not None for s in STACK)


def status() -> None:
    for service in STACK:
        pid = service.pid()
        state = f"running (pid {pid})" if pid else "stopped"
        print(f"   {service.name:13} {state:24} log {service.log}")
    if REDIS_SOURCE.pid() is not None:
        ok, reason = health.check(str(SOURCE_STATE))
        print(f"   redis source health: {'healthy' if ok else 'UNHEALTHY: ' + reason}")
    for pid, tag in leftovers():
        state = f"running (pid {pid})"
        print(f"   {tag.rsplit(':', 1)[1]:13} {state:24} a job left behind: `make down` stops it")


def clean() -> None:
    down()
    shutil.rmtree(STACK_DIR, ignore_errors=True)
    print(f"   removed {STACK_DIR}")
