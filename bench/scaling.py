"""The join's throughput on a local Spark standalone cluster, by workers and partitions.

docs/scaling.md's table. Against a running stack (`make up`, any number of brokers):
for each partition count P of BENCH_SCALING_PARTITIONS (default 1,2,4), fresh topics of
P partitions hold BENCH_CUSTOMERS customers and BENCH_EVENTS risk scores (keyed by their
publish time, so spread over the partitions); for each worker count W of
BENCH_SCALING_WORKERS (default 1,2), a master and W one-core workers
(stedi/stack/spark_cluster.py) run `./submit-join.sh --available-now` with
STEDI_SHUFFLE_PARTITIONS=P. The figure is risk scores per second of micro-batches (the
JVM's start and exit left out, as bench/backlog.py reports it), and the wall time.

    .venv/bin/python -m bench.scaling     # prints a table, writes build/bench/scaling.json
"""

from __future__ import annotations

import dataclasses
import json
import os
import sys

from kafka import KafkaAdminClient
from kafka.admin import NewTopic

from bench.backlog import join_argv, run_to_end
from bench.data import produce_customers, produce_scores
from bench.settings import ROOT, BenchSettings
from stedi.config import Settings
from stedi.stack import kafka_server, services, spark_cluster
from stedi.stack.process import stop_together


def counts(name: str, default: str) -> list[int]:
    return [int(n) for n in (os.environ.get(name) or default).split(",")]


def create_topics(settings: Settings, names: list[str], partitions: int) -> None:
    factor, _ = kafka_server.replication(settings.kafka_brokers)
    admin = KafkaAdminClient(bootstrap_servers=settings.kafka_bootstrap_servers)
    try:
        admin.create_topics([NewTopic(n, partitions, factor) for n in names])
    finally:
        admin.close()


def delete_topics(settings: Settings, names: list[str]) -> None:
    admin = KafkaAdminClient(bootstrap_servers=settings.kafka_bootstrap_servers)
    try:
        admin.delete_topics(names)
    finally:
        admin.close()


def measure(settings: Settings, bench: BenchSettings, partitions: int, workers: int) -> dict:
    """One run of the join over the backlog on `workers` workers."""
    cluster = dataclasses.replace(settings, spark_workers=workers)
    started = services.start_spark_cluster(cluster)
    try:
        env = {
            **os.environ,
            **spark_cluster.stack_env(cluster),
            "KAFKA_BOOTSTRAP_SERVERS": settings.kafka_bootstrap_servers,
            "STEDI_SHUFFLE_PARTITIONS": str(partitions),
        }
        label = f"scaling-p{partitions}-w{workers}"
        run, figures = run_to_end(label, join_argv(), env, bench)
    finally:
        stop_together(started)
    seconds = figures["seconds"]
    return {
        "partitions": partitions,
        "workers": workers,
        "events": bench.events,
        "seconds": round(seconds, 1),
        "scores_per_s": round(bench.events / seconds) if seconds else 0,
        "wall_s": round(run.elapsed, 1),
    }


def main() -> None:
    base = Settings()
    settings = dataclasses.replace(
        base, kafka_bootstrap_servers=kafka_server.bootstrap_servers(base)
    )
    bench = BenchSettings()
    results = []
    for partitions in counts("BENCH_SCALING_PARTITIONS", "1,2,4"):
        suffix = f"scaling-{partitions}-{os.getpid()}"
        topics = {
            "STEDI_REDIS_TOPIC": f"redis-server-{suffix}",
            "STEDI_EVENTS_TOPIC": f"stedi-events-{suffix}",
            "KAFKA_RISK_TOPIC": f"customer-risk-{suffix}",
            "STEDI_DEAD_LETTER_TOPIC": f"dead-letter-{suffix}",
        }
        create_topics(settings, list(topics.values()), partitions)
        os.environ.update(topics)
        try:
            produce_customers(settings, topics["STEDI_REDIS_TOPIC"], bench.customers)
            produce_scores(
                settings,
                topics["STEDI_EVENTS_TOPIC"],
                range(bench.events),
                bench.customers,
                f"{partitions}-partition",
            )
            for workers in counts("BENCH_SCALING_WORKERS", "1,2"):
                results.append(measure(settings, bench, partitions, workers))
                print(json.dumps(results[-1]), file=sys.stderr, flush=True)
        finally:
            delete_topics(settings, list(topics.values()))
    print("| partitions | workers | scores/s of micro-batches | batches' s | wall s |")
    print("|---|---|---|---|---|")
    for r in results:
        print(
            f"| {r['partitions']} | {r['workers']} | {r['scores_per_s']:,} "
            f"| {r['seconds']} | {r['wall_s']} |"
        )
    out = ROOT / "build" / "bench" / "scaling.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(results, indent=2) + "\n")


if __name__ == "__main__":
    main()
