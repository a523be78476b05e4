"""Start, check and stop the local stack's processes, each with a PID file and a log file."""

from __future__ import annotations

import base64
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import uuid
from dataclasses import dataclass
from pathlib import Path

from stedi.config import Settings

ROOT = Path(__file__).resolve().parents[2]
STACK_DIR = Path(os.environ.get("STEDI_STACK_DIR", ROOT / "build" / "stack"))
KAFKA_JARS = ROOT / "build" / "jars" / "kafka"
LOG_DIR = STACK_DIR / "logs"
PID_DIR = STACK_DIR / "pids"


class StackError(RuntimeError):
    """A service did not start; the message says what to do."""


def log_path(name: str) -> Path:
    return LOG_DIR / f"{name}.log"


def tail(path: Path, lines: int = 30) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except FileNotFoundError:
        return "(no log yet)"


def port_open(port: int, host: str = "127.0.0.1") -> bool:
    with socket.socket() as sock:
        sock.settimeout(0.5)
        return sock.connect_ex((host, port)) == 0


@dataclass
class Service:
    name: str
    marker: str  # a word of its command line: guards against a recycled PID

    @property
    def pid_file(self) -> Path:
        return PID_DIR / f"{self.name}.pid"

    def pid(self) -> int | None:
        """The PID of our running process, or None (a stale PID file is removed)."""
        try:
            pid = int(self.pid_file.read_text())
            cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ")
        except (FileNotFoundError, ValueError):
            self.pid_file.unlink(missing_ok=True)
            return None
        if self.marker.encode() not in cmdline:
            self.pid_file.unlink(missing_ok=True)
            return None
        return pid

    def start(self, argv: list[str], env: dict | None = None) -> int:
        LOG_DIR.mkdir(parents=True, exist_ok=True)
        PID_DIR.mkdir(parents=True, exist_ok=True)
        with open(log_path(self.name), "ab") as log:
            proc = subprocess.Popen(
                argv,
                stdout=log,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                cwd=ROOT,
                env={**os.environ, **(env or {})},
                start_new_session=True,  # Ctrl-C in the terminal does not reach it
            )
        self.pid_file.write_text(str(proc.pid))
        return proc.pid

    def stop(self, timeout: float = 60) -> bool:
        """SIGTERM, wait for a graceful exit, SIGKILL after `timeout`. True if it was running."""
        pid = self.pid()
        if pid is None:
            return False
        os.kill(pid, signal.SIGTERM)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline and _alive(pid):
            time.sleep(0.2)
        if _alive(pid):
            print(f"   {self.name} did not stop in {timeout:.0f} s: killing it", file=sys.stderr)
            os.kill(pid, signal.SIGKILL)
        self.pid_file.unlink(missing_ok=True)
        return True

    def wait_until(self, ready, what: str, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.pid() is None:
                raise StackError(
                    f"{self.name} exited while starting. Last lines of {log_path(self.name)}:\n"
                    f"{tail(log_path(self.name))}"
                )
            if ready():
                return
            time.sleep(0.5)
        raise StackError(
            f"{self.name} did not {what} within {timeout:.0f} s. "
            f"Last lines of {log_path(self.name)}:\n{tail(log_path(self.name))}"
        )


def _alive(pid: int) -> bool:
    try:
        os.waitpid(pid, os.WNOHANG)  # reap it if it is our child
    except ChildProcessError:
        pass
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except FileNotFoundError:
        return False
    return stat.rsplit(")", 1)[1].split()[0] != "Z"


REDIS = Service("redis", "redis-server")
KAFKA = Service("kafka", "kafka.Kafka")
REDIS_SOURCE = Service("redis-source", "stedi.redis_source")


# --- Redis ---------------------------------------------------------------------------
def redis_conf(settings: Settings) -> str:
    data = STACK_DIR / "redis"
    return "\n".join(
        [
            "bind 127.0.0.1",
            f"port {settings.redis_port}",
            "protected-mode yes",
            "daemonize no",
            f"dir {data}",
            "dbfilename dump.rdb",
            # RDB snapshots (and one at shutdown) keep the data across make down/up and
            # the replication id, so the Redis source continues instead of resyncing.
            "save 60 1 10 100",
            "appendonly no",
            # The Redis source resumes from this backlog after being down: keep it
            # large and never free it, even while no replica is connected.
            "repl-backlog-size 256mb",
            "repl-backlog-ttl 0",
            "repl-diskless-sync no",
            "",
        ]
    )


def redis_answers(settings: Settings) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", settings.redis_port), timeout=1) as sock:
            sock.sendall(b"PING\r\n")
            return sock.recv(64).startswith(b"+PONG")
    except OSError:
        return False


def start_redis(settings: Settings) -> None:
    if REDIS.pid() is not None:
        print(f"   redis already running (pid {REDIS.pid()})")
        return
    if port_open(settings.redis_port):
        raise StackError(
            f"port {settings.redis_port} is taken by another process: stop it or set REDIS_PORT"
        )
    binary = shutil.which("redis-server")
    if binary is None:
        raise StackError("redis-server is not installed: run `make install`")
    (STACK_DIR / "redis").mkdir(parents=True, exist_ok=True)
    conf = STACK_DIR / "redis" / "redis.conf"
    conf.write_text(redis_conf(settings))
    REDIS.start([binary, str(conf)])
    REDIS.wait_until(lambda: redis_answers(settings), "answer PING", 30)
    print(f"   redis ready on 127.0.0.1:{settings.redis_port} (pid {REDIS.pid()})")


# --- Kafka ---------------------------------------------------------------------------
def kafka_port(settings: Settings) -> int:
    return int(settings.kafka_bootstrap_servers.split(",")[0].rsplit(":", 1)[1])


def kafka_properties(settings: Settings) -> str:
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
            f"log.dirs={STACK_DIR / 'kafka' / 'data'}",
            "num.partitions=1",
            "auto.create.topics.enable=false",
            "offsets.topic.replication.factor=1",
            "transaction.state.log.replication.factor=1",
            "transaction.state.log.min.isr=1",
            "share.coordinator.state.topic.replication.factor=1",
            "share.coordinator.state.topic.min.isr=1",
            "group.initial.rebalance.delay.ms=0",
            "",
        ]
    )


def _java(main_class: str, *args: str, heap: str = "256m") -> list[str]:
    if not any(KAFKA_JARS.glob("kafka_*.jar")):
        raise StackError(f"Kafka's jars are missing in {KAFKA_JARS}: run `make install`")
    return [
        shutil.which("java") or "java",
        f"-Xmx{heap}",
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


def start_kafka(settings: Settings) -> None:
    if KAFKA.pid() is not None:
        print(f"   kafka already running (pid {KAFKA.pid()})")
        return
    for port in (kafka_port(settings), settings.kafka_controller_port):
        if port_open(port):
            raise StackError(f"port {port} is taken by another process: stop it first")
    kafka_dir = STACK_DIR / "kafka"
    kafka_dir.mkdir(parents=True, exist_ok=True)
    props = kafka_dir / "server.properties"
    props.write_text(kafka_properties(settings))
    if not (kafka_dir / "data" / "meta.properties").exists():
        cluster_id = base64.urlsafe_b64encode(uuid.uuid4().bytes).rstrip(b"=").decode()
        print(f"   formatting Kafka storage (cluster {cluster_id})")
        result = subprocess.run(
            _java("kafka.tools.StorageTool", "format", "-t", cluster_id, "-c", str(props)),
            capture_output=True,
            text=True,
        )
        if result.returncode != 0:
            raise StackError(f"formatting Kafka storage failed:\n{result.stdout}{result.stderr}")
    KAFKA.start(_java("kafka.Kafka", str(props), heap="1g"))
    KAFKA.wait_until(lambda: kafka_answers(settings), "answer on its listener", 120)
    print(f"   kafka ready on {settings.kafka_bootstrap_servers} (pid {KAFKA.pid()})")


def stack_topics(settings: Settings) -> dict[str, dict[str, str]]:
    """The topics of the stack, with their configs (docker-compose.yaml creates the same)."""
    return {
        # Customers are written to Redis once: their records must never expire.
        settings.redis_topic: {"retention.ms": "-1"},
        settings.events_topic: {},
        settings.risk_topic: {},
        settings.dead_letter_topic: {},
    }


def create_topics(settings: Settings) -> None:
    from kafka import KafkaAdminClient
    from kafka.admin import NewTopic

    admin = KafkaAdminClient(bootstrap_servers=settings.kafka_bootstrap_servers)
    try:
        existing = set(admin.list_topics())
        wanted = stack_topics(settings)
        new = [
            NewTopic(name, num_partitions=1, replication_factor=1, topic_configs=configs)
            for name, configs in wanted.items()
            if name not in existing
        ]
        if new:
            admin.create_topics(new)
            print(f"   created topics: {', '.join(t.name for t in new)}")
    finally:
        admin.close()


# --- the Redis source ------------------------------------------------------------------
def start_redis_source() -> None:
    if REDIS_SOURCE.pid() is not None:
        print(f"   redis source already running (pid {REDIS_SOURCE.pid()})")
        return
    from stedi.redis_source import health

    state = STACK_DIR / "redis-source.json"
    Path(health.health_path(str(state))).unlink(missing_ok=True)  # a previous run's verdict
    REDIS_SOURCE.start(
        [sys.executable, "-m", "stedi.redis_source"],
        env={"STEDI_REDIS_SOURCE_STATE": str(state), "PYTHONUNBUFFERED": "1"},
    )
    # Ready: streaming from Redis (snapshot published, if any) and connected to Kafka.
    REDIS_SOURCE.wait_until(lambda: health.ready(str(state)), "connect to Redis and Kafka", 180)
    print(f"   redis source running (pid {REDIS_SOURCE.pid()}), log {log_path('redis-source')}")


# --- the commands --------------------------------------------------------------------------
STACK = (REDIS, KAFKA, REDIS_SOURCE)  # in start order


def up(settings: Settings) -> list[Service]:
    """Start what is not running; returns the services this call started."""
    print(f">> local stack in {STACK_DIR}")
    running_before = {s.name for s in STACK if s.pid() is not None}
    start_redis(settings)
    start_kafka(settings)
    create_topics(settings)
    start_redis_source()
    return [s for s in STACK if s.name not in running_before]


def down(only: list[Service] | None = None) -> None:
    """Stop the stack's services (or `only` these), the last started first."""
    for service in reversed(STACK):
        if (only is None or service in only) and service.stop():
            print(f"   stopped {service.name}")


def is_up() -> bool:
    return all(s.pid() is not None for s in STACK)


def status() -> None:
    for service in STACK:
        pid = service.pid()
        state = f"running (pid {pid})" if pid else "stopped"
        print(f"   {service.name:13} {state:24} log {log_path(service.name)}")


def clean() -> None:
    down()
    shutil.rmtree(STACK_DIR, ignore_errors=True)
    print(f"   removed {STACK_DIR}")
