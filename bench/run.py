"""`make bench`: throughput and memory of the Redis source and the Spark join on this machine.

Needs the local stack (started, and stopped again, when it is not up). Prints a
table and writes build/bench/results.json. Sizes: BENCH_RECORDS (default 20000).
"""

from __future__ import annotations

import json
import os
import platform
import re
import resource
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

import redis
from kafka import KafkaAdminClient, KafkaConsumer, KafkaProducer, TopicPartition
from kafka.admin import NewTopic

from stedi.config import Settings
from stedi.redis_source.records import zadd_value
from stedi.stack import services

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "build" / "bench" / "results.json"
N = int(os.environ.get("BENCH_RECORDS", "20000"))


def progress(message: str) -> None:
    print(f"   {message}", file=sys.stderr, flush=True)


def count_new_records(settings: Settings, topic: str, start: dict, key_prefix: bytes, want: int):
    """Wait until `want` records whose key starts with key_prefix arrived after `start`."""
    consumer = KafkaConsumer(bootstrap_servers=settings.kafka_bootstrap_servers, group_id=None)
    tp = TopicPartition(topic, 0)
    consumer.assign([tp])
    consumer.seek(tp, start[tp])
    seen, deadline = 0, time.monotonic() + 600
    while seen < want and time.monotonic() < deadline:
        for records in consumer.poll(timeout_ms=500, max_records=5000).values():
            seen += sum(1 for r in records if r.key and r.key.startswith(key_prefix))
    consumer.close()
    return seen


def bench_redis_source(settings: Settings) -> dict:
    """N single-member ZADDs (pipelined) -> records on redis-server, end to end."""
    consumer = KafkaConsumer(bootstrap_servers=settings.kafka_bootstrap_servers, group_id=None)
    tp = TopicPartition(settings.redis_topic, 0)
    start = consumer.end_offsets([tp])
    consumer.close()
    key = f"bench-{uuid.uuid4().hex[:8]}"
    client = redis.Redis(host=settings.redis_host, port=settings.redis_port)
    began = time.monotonic()
    pipe = client.pipeline(transaction=False)
    for i in range(N):
        pipe.zadd(key, {f'{{"n":{i}}}': 0})
        if i % 1000 == 999:
            pipe.execute()
    pipe.execute()
    written = time.monotonic()
    progress(f"Redis source: {N} ZADDs written in {written - began:.1f} s, waiting for Kafka")
    seen = count_new_records(settings, settings.redis_topic, start, key.encode(), N)
    elapsed = time.monotonic() - began
    client.delete(key)
    client.close()
    return {"records": seen, "seconds": round(elapsed, 2), "records_per_s": round(seen / elapsed)}


def bench_join(settings: Settings) -> dict:
    """N customers and N risk scores on fresh topics -> submit-join.sh --available-now."""
    suffix = uuid.uuid4().hex[:8]
    topics = {
        "STEDI_REDIS_TOPIC": f"bench-redis-{suffix}",
        "STEDI_EVENTS_TOPIC": f"bench-events-{suffix}",
        "KAFKA_RISK_TOPIC": f"bench-risk-{suffix}",
        "STEDI_DEAD_LETTER_TOPIC": f"bench-dead-{suffix}",
    }
    admin = KafkaAdminClient(bootstrap_servers=settings.kafka_bootstrap_servers)
    admin.create_topics([NewTopic(t, 1, 1) for t in topics.values()])
    admin.close()
    producer = KafkaProducer(bootstrap_servers=settings.kafka_bootstrap_servers, linger_ms=20)
    for i in range(N):
        email = f"Bench.Customer{i}@test.com"
        birth_day = f"{1936 + i % 30}-01-01"
        member = json.dumps({"customerName": f"Bench {i}", "email": email,
                             "phone": "8015551212", "birthDay": birth_day})  # fmt: skip
        producer.send(topics["STEDI_REDIS_TOPIC"], key=b"Customer",
                      value=zadd_value(b"Customer", [(member.encode(), 0.0)]))  # fmt: skip
        risk = {"customer": email, "score": round(i % 100 / 7, 2),
                "riskDate": "2020-09-14T07:54:06.417Z"}  # fmt: skip
        producer.send(topics["STEDI_EVENTS_TOPIC"], value=json.dumps(risk).encode())
    producer.flush()
    producer.close()
    progress(f"join: {N} customers and {N} risk scores produced; running submit-join.sh")
    with tempfile.TemporaryDirectory() as checkpoints:
        env = {**os.environ, **topics, "STEDI_CHECKPOINT_DIR": checkpoints, "STEDI_SUBMIT": "local"}
        began = time.monotonic()
        result = subprocess.run(
            [str(ROOT / "submit-join.sh"), "--available-now"],
            env=env,
            capture_output=True,
            text=True,
        )
        elapsed = time.monotonic() - began
    if result.returncode != 0:
        raise SystemExit(f"submit-join.sh failed:\n{result.stderr[-3000:]}")
    (RESULTS.parent / "join.log").write_text(result.stdout + result.stderr)
    peak_rss_mb = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024
    progress_re = (
        r"\[customer-risk-join\] batch \d+: (\d+) rows in, [\d.]+ rows/s, (\d+) ms, (\d+) state"
    )
    batches = re.findall(progress_re, result.stdout)
    rows = sum(int(b[0]) for b in batches)
    batch_ms = sum(int(b[1]) for b in batches)
    state_rows = int(batches[-1][2]) if batches else 0
    consumer = KafkaConsumer(bootstrap_servers=settings.kafka_bootstrap_servers, group_id=None)
    tp = TopicPartition(topics["KAFKA_RISK_TOPIC"], 0)
    outputs = consumer.end_offsets([tp])[tp]
    consumer.close()
    return {
        "input_rows": rows,
        "outputs": outputs,
        "batch_seconds": round(batch_ms / 1000, 2),
        "rows_per_s_in_batches": round(rows / (batch_ms / 1000)) if batch_ms else None,
        "wall_seconds_with_startup": round(elapsed, 1),
        "state_rows": state_rows,
        "driver_peak_rss_mb": round(peak_rss_mb),
    }


def machine() -> dict:
    with open("/proc/meminfo") as f:
        mem_kb = int(f.readline().split()[1])
    cpu = next(
        (line.split(":", 1)[1].strip() for line in open("/proc/cpuinfo") if "model name" in line),
        platform.processor(),
    )
    return {"cpus": os.cpu_count(), "memory_gib": round(mem_kb / 1024 / 1024), "cpu": cpu,
            "python": platform.python_version()}  # fmt: skip


def main() -> None:
    settings = Settings()
    started = services.up(settings)
    try:
        source = bench_redis_source(settings)
        join = bench_join(settings)
    finally:
        if started:
            services.down(only=started)
    results = {"records": N, "machine": machine(), "redis_source": source, "join": join,
               "date": time.strftime("%Y-%m-%d")}  # fmt: skip
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps(results, indent=2))
    m = results["machine"]
    print(f"\nmachine: {m['cpus']} cores, {m['memory_gib']} GiB, {m['cpu']}; N = {N}")
    print(f"{'what':44} {'figure':>14}")
    rows = [
        ("Redis source: ZADD -> redis-server records/s", source["records_per_s"]),
        ("Redis source: seconds for N records", source["seconds"]),
        ("join: input rows (customers + risk scores)", join["input_rows"]),
        ("join: output records", join["outputs"]),
        ("join: rows/s inside micro-batches", join["rows_per_s_in_batches"]),
        ("join: wall seconds incl. JVM start", join["wall_seconds_with_startup"]),
        ("join: state rows at the end", join["state_rows"]),
        ("join: driver peak RSS (MiB)", join["driver_peak_rss_mb"]),
    ]
    for what, figure in rows:
        print(f"{what:44} {figure:>14}")
    print(f"\nwritten to {RESULTS}")


if __name__ == "__main__":
    main()
