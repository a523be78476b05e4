"""The local cluster's shape from its settings: brokers' ports and quorum, replication,
what clients are given, the Spark cluster's daemons and the engine's master."""

from __future__ import annotations

import pytest

from stedi.config import Settings
from stedi.stack import kafka_server, services, spark_cluster
from stedi.stack.process import StackError


def settings(monkeypatch, **env) -> Settings:
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    return Settings()


def properties(text: str) -> dict[str, str]:
    return dict(line.split("=", 1) for line in text.splitlines() if line)


def test_one_broker_is_the_default_and_keeps_its_single_node_config(monkeypatch, tmp_path):
    monkeypatch.delenv("STEDI_KAFKA_BROKERS", raising=False)
    one = settings(monkeypatch, KAFKA_BOOTSTRAP_SERVERS="localhost:9092")
    props = properties(kafka_server.kafka_properties(one, tmp_path))
    assert one.kafka_brokers == 1
    assert props["controller.quorum.voters"] == "1@127.0.0.1:9093"
    assert props["offsets.topic.replication.factor"] == "1"
    assert props["min.insync.replicas"] == "1"
    assert kafka_server.bootstrap_servers(one) == "localhost:9092"


def test_three_brokers_take_every_second_port_and_form_one_quorum(monkeypatch, tmp_path):
    three = settings(
        monkeypatch,
        STEDI_KAFKA_BROKERS="3",
        KAFKA_BOOTSTRAP_SERVERS="127.0.0.1:19092",
        STEDI_KAFKA_CONTROLLER_PORT="19093",
    )
    nodes = [properties(kafka_server.kafka_properties(three, tmp_path, i)) for i in range(3)]
    assert [n["node.id"] for n in nodes] == ["1", "2", "3"]
    assert [n["listeners"] for n in nodes] == [
        f"PLAINTEXT://127.0.0.1:{p},CONTROLLER://127.0.0.1:{p + 1}" for p in (19092, 19094, 19096)
    ]
    voters = "1@127.0.0.1:19093,2@127.0.0.1:19095,3@127.0.0.1:19097"
    assert {n["controller.quorum.voters"] for n in nodes} == {voters}
    # Kafka's own topics survive a broker too, and refuse a write only one replica holds.
    assert {n["offsets.topic.replication.factor"] for n in nodes} == {"3"}
    assert {n["min.insync.replicas"] for n in nodes} == {"2"}
    assert kafka_server.bootstrap_servers(three) == (
        "127.0.0.1:19092,127.0.0.1:19094,127.0.0.1:19096"
    )


@pytest.mark.parametrize(
    ("brokers", "expected"), [(1, (1, 1)), (2, (2, 1)), (3, (3, 2)), (5, (3, 2))]
)
def test_topics_have_min_3_brokers_replicas_and_two_in_sync_from_three(brokers, expected):
    assert kafka_server.replication(brokers) == expected


def test_a_stack_made_with_another_number_of_brokers_is_refused(tmp_path):
    first = tmp_path / "kafka"
    (first / "data").mkdir(parents=True)
    (first / "data" / "meta.properties").write_text("cluster.id=abc\n")
    kafka_server.check_broker_count(first, 1)  # no stamp: a stack of one broker
    with pytest.raises(StackError, match="made with 1 broker"):
        kafka_server.check_broker_count(first, 3)
    (first / "brokers").write_text("3\n")
    kafka_server.check_broker_count(first, 3)
    assert kafka_server.stored_cluster_id(first) == "abc"


def test_the_stack_has_one_kafka_per_broker_and_a_spark_cluster_only_with_workers(monkeypatch):
    default = settings(monkeypatch, STEDI_KAFKA_BROKERS="1", STEDI_SPARK_WORKERS="0")
    assert services.stack(default) == services.STACK
    assert spark_cluster.stack_env(default) == {}
    cluster = settings(monkeypatch, STEDI_KAFKA_BROKERS="3", STEDI_SPARK_WORKERS="2")
    names = [s.name for s in services.stack(cluster)]
    assert names == [
        "redis", "kafka", "kafka-2", "kafka-3", "redis-source",
        "spark-master", "spark-worker-1", "spark-worker-2",
    ]  # fmt: skip
    assert all(s in services.EVERY_SERVICE for s in services.stack(cluster))  # make down stops them


def test_the_engine_runs_on_the_local_master_and_the_daemons_bind_to_loopback(
    monkeypatch, tmp_path
):
    cluster = settings(
        monkeypatch,
        STEDI_SPARK_WORKERS="2",
        STEDI_SPARK_MASTER_PORT="17077",
        STEDI_SPARK_WEBUI_PORT="17080",
    )
    assert spark_cluster.stack_env(cluster)["SPARK_MASTER"] == "spark://127.0.0.1:17077"
    master = spark_cluster.master_argv(tmp_path, cluster)
    worker = spark_cluster.worker_argv(tmp_path, cluster, 2, tmp_path / "w")
    assert master[1].endswith("master.Master") and worker[1].endswith("worker.Worker")
    for argv in (master, worker):
        assert argv[argv.index("--host") + 1] == "127.0.0.1"
    assert master[master.index("--webui-port") + 1] == "17080"
    assert worker[worker.index("--webui-port") + 1] == "17082"
    assert worker[-1] == "spark://127.0.0.1:17077"
    assert worker[worker.index("--cores") + 1] == "1"


def test_a_clusters_jobs_bound_their_waits_on_a_broker_unless_told_otherwise(monkeypatch):
    one = settings(monkeypatch, STEDI_KAFKA_BROKERS="1", KAFKA_BOOTSTRAP_SERVERS="h:9092")
    assert kafka_server.job_env(one, {}) == {"KAFKA_BOOTSTRAP_SERVERS": "h:9092"}
    three = settings(monkeypatch, STEDI_KAFKA_BROKERS="3")
    assert kafka_server.job_env(three, {})["STEDI_KAFKA_TIMEOUT_MS"] == "10000"
    chosen = kafka_server.job_env(three, {"STEDI_KAFKA_TIMEOUT_MS": "30000"})
    assert "STEDI_KAFKA_TIMEOUT_MS" not in chosen  # the environment's own reaches the engine
    assert chosen["KAFKA_BOOTSTRAP_SERVERS"] == "h:9092,h:9094,h:9096"
