"""The local Kafka broker of `make up` (KRaft, one node): config, readiness, start, topics."""

from __future__ import annotations

import base64
import os
import shutil
import subprocess
import uuid
from pathlib import Path

from stedi.config import Settings
from stedi.stack.process import TAG, Service, StackError, port_holder, port_open

ROOT = Path(__file__).resolve().parents[2]
KAFKA_JARS = ROOT / "build" / "jars" / "kafka"


def new_cluster_id() -> str:
    """A random cluster id in Kafka's form (a UUID in URL-safe base64), never starting with
    "-": the storage tool's argument parser would take such an id for an option (one id in
    64 did, as Kafka's own Uuid.randomUuid also avoids)."""
    while True:
        cluster_id = base64.urlsafe_b64encode(uuid.uuid4().bytes).rstrip(b"=").decode()
        if not cluster_id.startswith("-"):
            return cluster_id


def kafka_port(settings: Settings) -> int:
    return int(settings.kafka_bootstrap_servers.split(",")[0].rsplit(":", 1)[1])


def kafka_properties(settings: Settings, data: Path) -> str:
    port = kafka_port(settings)
    controller = settings.kafka_controller_port
    return "\n".join(
        [
            "process.roles=broker,controller",
            "node.id=1",
            f"controller.quorum.voters=1@127.0.0.1:{controller}",
            f"listeners=PLAINTEXT://127.0.0.1:{port},CONTROLLER://127.0.0.1:{controller}",
            f"advertised.listeners=PLAINTEXT://127.0.0.1:{port}",
            "controller.listener.names=CONTROLLER",
            "inter.broker.listener.name=PLAINTEXT",
            "listener.security.protocol.map=CONTROLLER:PLAINTEXT,PLAINTEXT:PLAINTEXT",
            f"log.dirs={data}",
            "num.partitions=1",
            "auto.create.topics.enable=false",
            "offsets.topic.replication.factor=1",
            "transaction.state.log.replication.factor=1",
            "transaction.state.log.min.isr=1",
            "share.coordinator.state.topic.replication.factor=1",
            "share.coordinator.state.topic.min.isr=1",
            "group.initial.rebalance.delay.ms=0",
            # The log cleaner (compacted topics: only Kafka's own __consumer_offsets here)
            # holds its key map on the heap: 128 MiB by default, half the broker's heap
            # and 120 MiB of its resident memory. 8 MiB maps some 300,000 keys a pass.
            "log.cleaner.dedupe.buffer.size=8388608",
            "",
        ]
    )


def java(main_class: str, *args: str) -> list[str]:
    """A command line running one of Kafka's main classes from the Maven jars."""
    if not any(KAFKA_JARS.glob("kafka_*.jar")):
        raise StackError(f"Kafka's jars are missing in {KAFKA_JARS}: run `make install`")
    return [
        shutil.which("java") or "java",
        # Local use (the bench's 200,000-record backlogs need no more): a heap that starts
        # small, the collector with the smallest footprint, the C1 compiler only.
        "-Xmx256m",
        "-Xms32m",
        "-XX:+UseSerialGC",
        "-XX:TieredStopAtLevel=1",
        f"-Dlog4j2.configurationFile={Path(__file__).with_name('log4j2.properties')}",
        "-cp",
        f"{KAFKA_JARS}/*",
        main_class,
        *args,
    ]


def kafka_answers(settings: Settings) -> bool:
    from kafka import KafkaAdminClient
    from kafka.errors import KafkaError

    try:
        admin = KafkaAdminClient(
            bootstrap_servers=settings.kafka_bootstrap_servers, request_timeout_ms=3000
        )
    except KafkaError:
        return False
    try:
        admin.list_topics()
        return True
    except KafkaError:
        return False
    finally:
        admin.close()


def start_kafka(service: Service, settings: Settings) -> None:
    if (pid := service.pid()) is not None:
        print(f"   kafka already running (pid {pid})")
        return
    for port in (kafka_port(settings), settings.kafka_controller_port):
        if port_open(port):
            raise StackError(
                f"port {port} is taken by another process ({port_holder(port)}): stop it, "
                "or choose other ports (KAFKA_BOOTSTRAP_SERVERS, STEDI_KAFKA_CONTROLLER_PORT)"
            )
    kafka_dir = service.stack_dir / "kafka"
    kafka_dir.mkdir(parents=True, exist_ok=True)
    props = kafka_dir / "server.properties"
    props.write_text(kafka_properties(settings, kafka_dir / "data"))
    if not (kafka_dir / "data" / "meta.properties").exists():
        cluster_id = new_cluster_id()
        print(f"   formatting Kafka storage (cluster {cluster_id})")
        result = subprocess.run(
            java("kafka.tools.StorageTool", "format", "-t", cluster_id, "-c", str(props)),
            capture_output=True,
            text=True,
            env={**os.environ, TAG: f"{service.tag}-format"},
        )
        if result.returncode != 0:
            raise StackError(f"formatting Kafka storage failed:\n{result.stdout}{result.stderr}")
    service.start(java("kafka.Kafka", str(props)), env={"MALLOC_ARENA_MAX": "2"})
    service.wait_until(lambda: kafka_answers(settings), "answer on its listener", 120)
    print(f"   kafka ready on {settings.kafka_bootstrap_servers} (pid {service.pid()})")


def stack_topics(settings: Settings) -> dict[str, dict[str, str]]:
    """The topics of the stack, with their configs (docker-compose.yaml creates the same)."""
    return {
        # Customers are written to Redis once: their records must never expire.
        settings.redis_topic: {"retention.ms": "-1"},
        settings.events_topic: {},
        settings.risk_topic: {},
        settings.dead_letter_topic: {},
        # sparkpyriskscore.py's outputs
        settings.spark_risk_topic: {},
        settings.quality_topic: {},
    }


def create_topics(settings: Settings) -> None:
    from kafka import KafkaAdminClient
    from kafka.admin import NewTopic

    admin = KafkaAdminClient(bootstrap_servers=settings.kafka_bootstrap_servers)
    try:
        existing = set(admin.list_topics())
        new = [
            NewTopic(name, num_partitions=1, replication_factor=1, topic_configs=configs)
            for name, configs in stack_topics(settings).items()
            if name not in existing
        ]
        if new:
            admin.create_topics(new)
            print(f"   created topics: {', '.join(t.name for t in new)}")
    finally:
        admin.close()
