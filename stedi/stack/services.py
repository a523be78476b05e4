"""The local stack of `make up`: Redis, Kafka and the Redis source, started, checked, stopped;
with STEDI_KAFKA_BROKERS=N, N Kafka nodes, and with STEDI_SPARK_WORKERS=N a Spark standalone
master and N workers for make run's engine (stedi/stack/spark_cluster.py).

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
from stedi.stack import kafka_server, redis_server, spark_cluster
from stedi.stack.kafka_server import bootstrap_servers, create_topics, kafka_port, stack_topics
from stedi.stack.process import (
    Service,
    StackError,
    port_open,
    stop_pids,
    stop_together,
    tagged_processes,
    tail,
)

__all__ = [
    "KAFKA",
    "KAFKA_NODES",
    "REDIS",
    "REDIS_SOURCE",
    "ROOT",
    "STACK_DIR",
    "Service",
    "StackError",
    "bootstrap_servers",
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
    "start_spark_cluster",
    "status",
    "tail",
    "up",
]

ROOT = Path(__file__).resolve().parents[2]
STACK_DIR = Path(os.environ.get("STEDI_STACK_DIR", ROOT / "build" / "stack")).resolve()

REDIS = Service("redis", STACK_DIR)
KAFKA = Service("kafka", STACK_DIR)  # the first node; the others are kafka-2, kafka-3, ...
KAFKA_NODES = (
    KAFKA,
    *(Service(f"kafka-{i}", STACK_DIR) for i in range(2, kafka_server.MAX_BROKERS + 1)),
)
REDIS_SOURCE = Service("redis-source", STACK_DIR)
SPARK_MASTER = Service("spark-master", STACK_DIR)
SPARK_WORKERS = tuple(
    Service(f"spark-worker-{i}", STACK_DIR) for i in range(1, spark_cluster.MAX_WORKERS + 1)
)
STACK = (REDIS, KAFKA, REDIS_SOURCE)  # in start order, with one broker and no Spark cluster
# Every service any setting starts, in start order: what `make down` stops.
EVERY_SERVICE = (REDIS, *KAFKA_NODES, REDIS_SOURCE, SPARK_MASTER, *SPARK_WORKERS)


def stack(settings: Settings) -> tuple[Service, ...]:
    """The services `make up` runs with these settings, in start order."""
    workers = SPARK_WORKERS[: settings.spark_workers]
    spark = (SPARK_MASTER, *workers) if workers else ()
    return (REDIS, *KAFKA_NODES[: settings.kafka_brokers], REDIS_SOURCE, *spark)


SOURCE_STATE = STACK_DIR / "redis-source.json"


def log_path(name: str) -> Path:
    return STACK_DIR / "logs" / f"{name}.log"


def start_redis(settings: Settings) -> None:
    redis_server.start_redis(REDIS, settings)


def start_kafka(settings: Settings) -> None:
    if not 1 <= settings.kafka_brokers <= len(KAFKA_NODES):
        raise StackError(f"STEDI_KAFKA_BROKERS must be 1 to {len(KAFKA_NODES)}")
    kafka_server.start_kafka(list(KAFKA_NODES[: settings.kafka_brokers]), settings)


def start_spark_cluster(settings: Settings) -> list[Service]:
    """The Spark master and STEDI_SPARK_WORKERS workers, those not running yet; returns them."""
    if not 0 <= settings.spark_workers <= len(SPARK_WORKERS):
        raise StackError(f"STEDI_SPARK_WORKERS must be 0 to {len(SPARK_WORKERS)}")
    if settings.spark_workers == 0:
        return []
    services = [SPARK_MASTER, *SPARK_WORKERS[: settings.spark_workers]]
    running_before = {s.name for s in services if s.pid() is not None}
    spark_cluster.start(SPARK_MASTER, services[1:], settings)
    return [s for s in services if s.name not in running_before]


def start_redis_source(settings: Settings) -> None:
    if (pid := REDIS_SOURCE.pid()) is not None:
        print(f"   redis source already running (pid {pid})")
        return
    state = SOURCE_STATE
    Path(health.health_path(str(state))).unlink(missing_ok=True)  # a previous run's verdict
    REDIS_SOURCE.start(
        [sys.executable, "-m", "stedi.redis_source"],
        env={
            "STEDI_REDIS_SOURCE_STATE": str(state),
            "PYTHONUNBUFFERED": "1",
            "KAFKA_BOOTSTRAP_SERVERS": bootstrap_servers(settings),
        },
        cwd=ROOT,
    )
    # Ready: streaming from Redis (snapshot published, if any) and connected to Kafka.
    REDIS_SOURCE.wait_until(lambda: health.ready(str(state)), "connect to Redis and Kafka", 180)
    print(f"   redis source running (pid {REDIS_SOURCE.pid()}), log {REDIS_SOURCE.log}")


def up(settings: Settings) -> list[Service]:
    """Start what is not running; returns the services this call started."""
    print(f">> local stack in {STACK_DIR}")
    services = stack(settings)
    running_before = {s.name for s in services if s.pid() is not None}
    start_redis(settings)
    start_kafka(settings)
    create_topics(settings)
    start_redis_source(settings)
    start_spark_cluster(settings)
    return [s for s in services if s.name not in running_before]


def leftovers() -> list[tuple[int, str]]:
    """Processes of this checkout's stack that are none of its services' own
    (e.g. the jobs of a `make run` that was killed)."""
    own = {s.tag for s in EVERY_SERVICE}
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
    chosen = [s for s in reversed(EVERY_SERVICE) if only is None or s in only]
    nodes = [s for s in chosen if s in KAFKA_NODES]
    for service in chosen:
        if service in nodes[1:]:
            continue  # stopped with the first node
        group = nodes if service in nodes else [service]
        for stopped in stop_together(group):
            print(f"   stopped {stopped.name}")


def is_up(settings: Settings | None = None) -> bool:
    return all(s.pid() is not None for s in stack(settings or Settings()))


def status() -> None:
    for service in EVERY_SERVICE:
        pid = service.pid()
        if pid is None and service not in STACK:  # a cluster's part, not running
            continue
        state = f"running (pid {pid})" if pid else "stopped"
        print(f"   {service.name:15} {state:24} log {service.log}")
    if REDIS_SOURCE.pid() is not None:
        ok, reason = health.check(str(SOURCE_STATE))
        print(f"   redis source health: {'healthy' if ok else 'UNHEALTHY: ' + reason}")
    for pid, tag in leftovers():
        state = f"running (pid {pid})"
        print(f"   {tag.rsplit(':', 1)[1]:15} {state:24} a job left behind: `make down` stops it")


def clean() -> None:
    down()
    shutil.rmtree(STACK_DIR, ignore_errors=True)
    print(f"   removed {STACK_DIR}")
