"""`make run` on three Kafka brokers and a Spark cluster of two workers, the simulator at
30x (issue 36): `kill -9` of the broker that leads `stedi-events` partition 0, then of a
Spark worker. Every assessment the app published reaches `customer-risk`, the graph shows
each once, no job stops for good, and each fault's heal time is measured and printed.

Kafka's promise under test: replication factor 3, `min.insync.replicas=2` and idempotent
`acks=all` producers lose no acknowledged record when one broker dies. Spark's: a lost
executor's tasks run again on another, and the state stores load from the checkpoint.

The cluster runs on its own stack folder and on ports shifted by PORT_SHIFT from the
settings' (Kafka, controller, Redis, Spark master and UI), so it never meets the
session's one-broker stack; the other ports are free ones.
"""

from __future__ import annotations

import collections
import json
import os
import signal
import subprocess
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import pytest
from kafka import KafkaConsumer, TopicPartition

from stedi.config import Settings
from stedi.stack import kafka_server
from stedi.stack.process import Service, port_open, tagged_processes
from stedi.stack.services import ROOT
from tests.app_server import ADMIN_EMAIL, ADMIN_PASSWORD, free_port, log_in
from tests.integration.conftest import HEAL_TIMES
from tests.integration.test_spark_faults import GraphPoints

pytestmark = [pytest.mark.integration, pytest.mark.slow]

PORT_SHIFT = 10
BROKERS, WORKERS = 3, 2
# A fault has healed once an assessment the app published after it reaches the graph's topic.
HEAL_TIMEOUT_S = 90


def cluster_env(base: Settings, stack_dir: Path) -> dict[str, str]:
    """make run's environment for the cluster: the settings' ports shifted, free ones else."""
    kafka = kafka_server.kafka_port(base) + PORT_SHIFT
    return {
        "STEDI_STACK_DIR": str(stack_dir),
        "STEDI_CHECKPOINT_DIR": str(stack_dir / "checkpoints"),
        "STEDI_KAFKA_BROKERS": str(BROKERS),
        "STEDI_SPARK_WORKERS": str(WORKERS),
        "KAFKA_BOOTSTRAP_SERVERS": f"127.0.0.1:{kafka}",
        "STEDI_KAFKA_CONTROLLER_PORT": str(base.kafka_controller_port + PORT_SHIFT),
        "REDIS_PORT": str(base.redis_port + PORT_SHIFT),
        "STEDI_SPARK_MASTER_PORT": str(base.spark_master_port + PORT_SHIFT),
        "STEDI_SPARK_WEBUI_PORT": str(base.spark_webui_port + PORT_SHIFT),
        "STEDI_SPARK_UI_PORT": str(free_port()),
        "STEDI_APP_PORT": str(free_port()),
        "STEDI_SPARK_METRICS_PORT": str(free_port()),
        "STEDI_REDIS_SOURCE_METRICS_PORT": str(free_port()),
        "STEDI_ADMIN_USER": ADMIN_EMAIL,
        "STEDI_ADMIN_PASSWORD": ADMIN_PASSWORD,
        "STEDI_SIM_SPEED": "30",
    }


@dataclass
class ClusterRun:
    """`make run` on the cluster, in its own process group, as in a terminal."""

    env: dict
    log_path: Path
    process: subprocess.Popen | None = None

    @property
    def stack_dir(self) -> Path:
        return Path(self.env["STEDI_STACK_DIR"]).resolve()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.env['STEDI_APP_PORT']}"

    def client(self) -> httpx.Client:  # what tests.app_server's steps take
        return httpx.Client(base_url=self.url, timeout=10)

    def start(self) -> None:
        with open(self.log_path, "wb") as log:
            self.process = subprocess.Popen(
                ["make", "--no-print-directory", "run"],
                cwd=ROOT,
                env={**os.environ, **self.env},
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )

    def output(self) -> str:
        return self.log_path.read_text(errors="replace")[-4000:]

    def wait_for(self, what: str, ready, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            assert self.process.poll() is None, f"make run ended first:\n{self.output()}"
            if ready():
                return
            time.sleep(0.5)
        raise AssertionError(f"no {what} within {timeout} s:\n{self.output()}")

    def app_up(self) -> bool:
        try:
            return httpx.get(f"{self.url}/health", timeout=2).status_code == 200
        except httpx.HTTPError:
            return False

    def service(self, name: str) -> Service:
        return Service(name, self.stack_dir)

    def stop(self) -> None:
        """Ctrl-C; a second call does nothing."""
        if self.process is not None and self.process.poll() is None:
            os.killpg(self.process.pid, signal.SIGINT)
            self.process.wait(timeout=180)

    def leftovers(self) -> list[tuple[int, str]]:
        return list(tagged_processes(f"{self.stack_dir}:"))


@dataclass
class TopicLog:
    """Every record of a topic (all partitions, from the earliest), with when it was read."""

    servers: str
    topic: str
    records: list = field(default_factory=list)  # (read at, record)
    stop_event: threading.Event = field(default_factory=threading.Event)

    def __post_init__(self):
        self.thread = threading.Thread(target=self._read, daemon=True)
        self.thread.start()

    def _read(self) -> None:
        consumer = KafkaConsumer(
            self.topic,
            bootstrap_servers=self.servers,
            group_id=None,
            auto_offset_reset="earliest",
            enable_auto_commit=False,
        )
        try:
            while not self.stop_event.is_set():
                for batch in consumer.poll(timeout_ms=500).values():
                    now = time.time()
                    self.records.extend((now, record) for record in batch)
        finally:
            consumer.close()

    def close(self) -> None:
        self.stop_event.set()
        self.thread.join(30)


def published(events: TopicLog) -> dict[tuple, float]:
    """Each assessment the app published on `stedi-events`, with its Kafka time (s)."""
    found = {}
    for _, record in list(events.records):
        value = json.loads(record.value)
        key = (value["customer"], value["riskDate"], float(value["score"]))
        found.setdefault(key, record.timestamp / 1000)
    return found


def joined(risk: TopicLog) -> dict[tuple, tuple[float, int]]:
    """Each assessment on `customer-risk`: when it was first read, and its birth year."""
    found = {}
    for read_at, record in list(risk.records):
        value = json.loads(record.value)
        risk_date = dict(record.headers)["riskDate"].decode()
        key = (record.key.decode(), risk_date, float(value["score"]))
        found.setdefault(key, (read_at, int(value["birthYear"])))
    return found


def heal_time(events: TopicLog, risk: TopicLog, fault_at: float, run: ClusterRun) -> float:
    """Seconds from a fault until an assessment published after it is on `customer-risk`."""
    healed: list[float] = []

    def after_fault() -> bool:
        sent = {k for k, t in published(events).items() if t > fault_at}
        arrivals = [t for k, (t, _) in joined(risk).items() if k in sent]
        healed[:] = [min(arrivals)] if arrivals else []
        return bool(healed)

    run.wait_for("assessment through the healed cluster", after_fault, HEAL_TIMEOUT_S)
    return round(healed[0] - fault_at, 1)


def stedi_events_leader(servers: str, topic: str) -> int:
    """The node id of the broker that leads the topic's partition 0."""
    consumer = KafkaConsumer(bootstrap_servers=servers)
    try:
        consumer.topics()  # fetches the cluster's metadata
        return consumer._client.cluster.leader_for_partition(TopicPartition(topic, 0))
    finally:
        consumer.close()


def settings_with(env: dict) -> Settings:
    """The settings a process with `env` on top of this one's reads."""
    saved = dict(os.environ)
    os.environ.update(env)
    try:
        return Settings()
    finally:
        os.environ.clear()
        os.environ.update(saved)


def switch_simulation(run: ClusterRun, active: bool) -> None:
    client, token = log_in(run, ADMIN_EMAIL, ADMIN_PASSWORD)
    try:
        answer = client.post(
            "/api/simulation", json={"active": active}, headers={"X-CSRF-Token": token}
        )
    finally:
        client.close()
    assert answer.status_code == 200 and answer.json()["active"] is active, answer.text


def test_a_broker_and_a_spark_worker_killed_lose_no_assessment_and_the_graph_shows_each_once(
    tmp_path, request
):
    run = ClusterRun(cluster_env(Settings(), tmp_path / "stack"), tmp_path / "make-run.log")
    cluster = settings_with(run.env)
    servers = kafka_server.bootstrap_servers(cluster)
    logs: list[TopicLog] = []
    graph = None
    run.start()
    try:
        run.wait_for("app answering", run.app_up, 300)
        events = TopicLog(servers, cluster.events_topic)
        risk = TopicLog(servers, cluster.risk_topic)
        logs += [events, risk]
        graph = GraphPoints(run)  # from the topic's end, before any assessment
        switch_simulation(run, True)
        run.wait_for("first 30 graph points", lambda: len(joined(risk)) >= 30, 240)

        # 1: the broker that leads stedi-events partition 0.
        leader = stedi_events_leader(servers, cluster.events_topic)
        broker = run.service("kafka" if leader == 1 else f"kafka-{leader}")
        pid = broker.pid()
        assert pid is not None, f"no process for broker {leader}"
        broker_fault = time.time()
        os.kill(pid, signal.SIGKILL)
        broker_heal = heal_time(events, risk, broker_fault, run)
        assert stedi_events_leader(servers, cluster.events_topic) not in (leader, -1, None)

        # 2: a Spark worker, and with it its executor.
        worker = run.service("spark-worker-1")
        pid = worker.pid()
        assert pid is not None, "no Spark worker running"
        worker_fault = time.time()
        os.kill(pid, signal.SIGKILL)
        worker_heal = heal_time(events, risk, worker_fault, run)
        engine_log = run.stack_dir / "logs" / "spark.log"
        run.wait_for("executor lost", lambda: "Lost executor" in engine_log.read_text(), 60)

        switch_simulation(run, False)
        time.sleep(2)  # a score being stored as the switch went off is published meanwhile

        def all_joined() -> bool:
            return set(published(events)) <= set(joined(risk))

        run.wait_for("every published assessment joined", all_joined, 120)
        sent, out = published(events), joined(risk)
        lost = set(sent) - set(out)
        assert lost == set(), f"{len(lost)} of {len(sent)} assessments lost"
        expected = collections.Counter((year, score) for (_, _, score), (_, year) in out.items())
        deadline = time.monotonic() + 60
        while len(graph.points) < sum(expected.values()) and time.monotonic() < deadline:
            time.sleep(0.5)
        shown = collections.Counter((p["birthYear"], p["score"]) for p in graph.points)
        assert shown == expected, (
            f"{len(graph.points)} points for {len(out)} assessments; "
            f"twice: {sorted(shown - expected)[:5]}, missing: {sorted(expected - shown)[:5]}"
        )
        # No job stopped for good: make run ends as soon as one does.
        assert run.process.poll() is None, run.output()
        heal = {"broker": broker_heal, "worker": worker_heal}
        request.config.stash.setdefault(HEAL_TIMES, []).append(
            f"{BROKERS} brokers, {WORKERS} workers, {len(sent)} assessments, 0 lost: "
            f"broker kill -9 healed in {broker_heal} s, worker kill -9 in {worker_heal} s"
        )
        print(f"heal times: {heal}")
    finally:
        if graph is not None:
            graph.close()
        for log in logs:
            log.close()
        run.stop()
    assert run.leftovers() == [], "Ctrl-C left processes of the cluster behind"
    assert not port_open(kafka_server.kafka_port(cluster))
