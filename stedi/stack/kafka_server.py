"""The local Kafka of `make up` (KRaft): config, readiness, start, topics.

One node by default; STEDI_KAFKA_BROKERS=N starts N nodes, each a broker and a
controller, on loopback: node i (from 0) listens on the bootstrap port + 2i and on
the controller port + 2i. Topics then have min(3, N) replicas, and with three or
more an acknowledged write (acks=all) is on at least two of them
(`min.insync.replicas=2`), so it survives the loss of any one broker.
"""

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


# More nodes than this would need ports beyond the documented pairs; three is the cluster.
MAX_BROKERS = 5


def broker_ports(settings: Settings) -> list[int]:
    """Each node's client port: the bootstrap port, then every second port after it."""
    return [kafka_port(settings) + 2 * i for i in range(settings.kafka_brokers)]


def controller_ports(settings: Settings) -> list[int]:
    return [settings.kafka_controller_port + 2 * i for i in range(settings.kafka_brokers)]


def bootstrap_servers(settings: Settings) -> str:
    """What every client of the stack is given: all its brokers, so that a client started
    while one is down still finds the others. One broker: the setting as it is."""
    if settings.kafka_brokers == 1:
        return settings.kafka_bootstrap_servers
    host = settings.kafka_bootstrap_servers.split(",")[0].rsplit(":", 1)[0]
    return ",".join(f"{host}:{port}" for port in broker_ports(settings))


# A cluster's jobs give up on a broker after this long (STEDI_KAFKA_TIMEOUT_MS), unless
# set otherwise: Kafka's admin client asks a dead partition leader for the latest offsets
# until its own timeout (a minute) and only then looks for the new leader, so the default
# held the join's micro-batches that long after a broker died.
CLUSTER_JOB_TIMEOUT_MS = "10000"


def job_env(settings: Settings, environ) -> dict[str, str]:
    """What the stack gives the Spark jobs about Kafka: every broker, and on a cluster a
    bound on each wait for one (kept when the environment sets it)."""
    env = {"KAFKA_BOOTSTRAP_SERVERS": bootstrap_servers(settings)}
    if settings.kafka_brokers > 1 and not environ.get("STEDI_KAFKA_TIMEOUT_MS"):
        env["STEDI_KAFKA_TIMEOUT_MS"] = CLUSTER_JOB_TIMEOUT_MS
    return env


def replication(brokers: int) -> tuple[int, int]:
    """(replication factor, min.insync.replicas) for a cluster of `brokers` nodes."""
    return min(3, brokers), 2 if brokers >= 3 else 1


def kafka_properties(settings: Settings, data: Path, node: int = 0) -> str:
    port = broker_ports(settings)[node]
    controller = controller_ports(settings)[node]
    voters = ",".join(f"{i + 1}@127.0.0.1:{c}" for i, c in enumerate(controller_ports(settings)))
    factor, min_isr = replication(settings.kafka_brokers)
    return "\n".join(
        [
            "process.roles=broker,controller",
            f"node.id={node + 1}",
            f"controller.quorum.voters={voters}",
            f"listeners=PLAINTEXT://127.0.0.1:{port},CONTROLLER://127.0.0.1:{controller}",
            f"advertised.listeners=PLAINTEXT://127.0.0.1:{port}",
            "controller.listener.names=CONTROLLER",
            "inter.broker.listener.name=PLAINTEXT",
            "listener.security.protocol.map=CONTROLLER:PLAINTEXT,PLAINTEXT:PLAINTEXT",
            f"log.dirs={data}",
            "num.partitions=1",
            "auto.create.topics.enable=false",
            f"default.replication.factor={factor}",
            f"min.insync.replicas={min_isr}",
            f"offsets.topic.replication.factor={factor}",
            f"transaction.state.log.replication.factor={factor}",
            f"transaction.state.log.min.isr={min_isr}",
            f"share.coordinator.state.topic.replication.factor={factor}",
            f"share.coordinator.state.topic.min.isr={min_isr}",
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


def kafka_answers(settings: Settings, port: int | None = None) -> bool:
    """Whether the stack's Kafka (or only the broker on `port`) answers a metadata request."""
    from kafka import KafkaAdminClient
    from kafka.errors import KafkaError

    servers = f"127.0.0.1:{port}" if port else bootstrap_servers(settings)
    try:
        admin = KafkaAdminClient(bootstrap_servers=servers, request_timeout_ms=3000)
    except KafkaError:
        return False
    try:
        admin.list_topics()
        return True
    except KafkaError:
        return False
    finally:
        admin.close()


def check_broker_count(first_dir: Path, brokers: int) -> None:
    """A node's storage belongs to the quorum it was formatted for: a stack made with
    another number of brokers cannot be reused, its topics and checkpoints neither."""
    stamp = first_dir / "brokers"
    if not (first_dir / "data" / "meta.properties").exists():
        return
    made = int(stamp.read_text()) if stamp.exists() else 1
    if made != brokers:
        raise StackError(
            f"this stack's Kafka was made with {made} broker(s), not {brokers}: run "
            "`make clean` first (it deletes topics and checkpoints), or give this cluster "
            "its own STEDI_STACK_DIR and STEDI_CHECKPOINT_DIR"
        )


def start_kafka(nodes: list[Service], settings: Settings) -> None:
    """Starts the nodes that are not running (one per broker), formatting new storage with
    one cluster id; returns once each answers."""
    if len(nodes) != settings.kafka_brokers or not 1 <= len(nodes) <= MAX_BROKERS:
        raise StackError(f"STEDI_KAFKA_BROKERS must be 1 to {MAX_BROKERS}")
    first_dir = nodes[0].stack_dir / nodes[0].name
    check_broker_count(first_dir, len(nodes))
    ports = list(zip(broker_ports(settings), controller_ports(settings), strict=True))
    to_start = []
    for node, (port, controller) in zip(nodes, ports, strict=True):
        if (pid := node.pid()) is not None:
            print(f"   {node.name} already running (pid {pid})")
            continue
        for taken in (port, controller):
            if port_open(taken):
                raise StackError(
                    f"port {taken} is taken by another process ({port_holder(taken)}): stop "
                    "it, or choose other ports (KAFKA_BOOTSTRAP_SERVERS, "
                    "STEDI_KAFKA_CONTROLLER_PORT)"
                )
        to_start.append(node)
    cluster_id = None
    for i, node in enumerate(nodes):
        node_dir = node.stack_dir / node.name
        node_dir.mkdir(parents=True, exist_ok=True)
        props = node_dir / "server.properties"
        props.write_text(kafka_properties(settings, node_dir / "data", i))
        if (node_dir / "data" / "meta.properties").exists():
            continue
        cluster_id = cluster_id or stored_cluster_id(first_dir) or new_cluster_id()
        print(f"   formatting Kafka storage of {node.name} (cluster {cluster_id})")
        result = subprocess.run(
            java("kafka.tools.StorageTool", "format", "-t", cluster_id, "-c", str(props)),
            capture_output=True,
            text=True,
            env={**os.environ, TAG: f"{node.tag}-format"},
        )
        if result.returncode != 0:
            raise StackError(f"formatting Kafka storage failed:\n{result.stdout}{result.stderr}")
        if i == 0:
            (first_dir / "brokers").write_text(f"{len(nodes)}\n")
    for node in to_start:
        props = node.stack_dir / node.name / "server.properties"
        node.start(java("kafka.Kafka", str(props)), env={"MALLOC_ARENA_MAX": "2"})
    # A node of several answers once the quorum has a leader: all start before any is awaited.
    for node, (port, _) in zip(nodes, ports, strict=True):
        if node in to_start:
            node.wait_until(
                lambda p=port: kafka_answers(settings, p), "answer on its listener", 120
            )
            print(f"   {node.name} ready on 127.0.0.1:{port} (pid {node.pid()})")


def stored_cluster_id(first_dir: Path) -> str | None:
    """The cluster id the first node was formatted with (a node added later joins it)."""
    meta = first_dir / "data" / "meta.properties"
    if not meta.exists():
        return None
    for line in meta.read_text().splitlines():
        if line.startswith("cluster.id="):
            return line.split("=", 1)[1].strip()
    return None


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

    factor, min_isr = replication(settings.kafka_brokers)
    durability = {"min.insync.replicas": str(min_isr)} if min_isr > 1 else {}
    admin = KafkaAdminClient(bootstrap_servers=bootstrap_servers(settings))
    try:
        existing = set(admin.list_topics())
        new = [
            NewTopic(
                name,
                num_partitions=1,
                replication_factor=factor,
                topic_configs={**configs, **durability},
            )
            for name, configs in stack_topics(settings).items()
            if name not in existing
        ]
        if new:
            admin.create_topics(new)
            print(f"   created topics: {', '.join(t.name for t in new)}")
    finally:
        admin.close()
