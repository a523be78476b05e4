"""`make bench`: the project's join, the course approach and Kafka's own limit, in one run.

First runs the whole pipeline as a user runs it (bench/pipeline.py: `make run`
with the simulator at BENCH_PIPELINE_SPEED, measured for BENCH_PIPELINE_SECONDS).
Then measures (issue 14) on one backlog of BENCH_EVENTS risk scores for BENCH_CUSTOMERS
customers, on fresh topics: the join's and the peer's throughput with
--available-now, Kafka's consumer limit and round trip, the risk-score job's
throughput and state over BENCH_SCORE_TESTS rapid step tests (issue 15), the join's start-up and
end-to-end latency as a stream at BENCH_LATENCY_RATE scores/s for
BENCH_LATENCY_SECONDS, the driver's peak RSS, and the Redis source's throughput; the join's
CPU per micro-batch at the app's pace (bench/trickle.py) and the three card wrappers idle
side by side (bench/wrappers.py). Last, the app at a clinic network's scale
(bench/app_load.py, issue 35).
Writes build/bench/results.json (or BENCH_RESULTS) and prints a Markdown table.

Uses the running local stack, or starts it and stops what it started.
"""

from __future__ import annotations

import json
import os
import sys
import time

from bench import data
from bench.app_load import run_app
from bench.backlog import join_argv, marginal_s, peer_argv, run_backlog
from bench.kafka_limit import consumer_limit, roundtrip
from bench.latency import run_latency
from bench.machine import machine
from bench.pipeline import run_pipeline
from bench.redis_source import run_redis_source
from bench.report import ratios, table
from bench.risk_score import run_risk_score
from bench.settings import BenchSettings
from bench.topics import Topics
from bench.trickle import run_trickle
from bench.wrappers import run_wrappers
from stedi.config import Settings
from stedi.stack import services


def measure(settings: Settings, bench: BenchSettings, topics: Topics) -> dict:
    results: dict = {"machine": machine()}
    results["redis_source"] = run_redis_source(settings, bench.redis_records)

    print(
        f">> backlog: {bench.customers:,} customers, {bench.events:,} risk scores",
        file=sys.stderr,
        flush=True,
    )
    customers_topic = topics.create("customers", **{"retention.ms": "-1"})
    events_topic = topics.create("events")
    data.produce_customers(settings, customers_topic, bench.customers)
    data.produce_scores(settings, events_topic, range(bench.events), bench.customers, "backlog")

    results["kafka_limit"] = {
        **consumer_limit(settings, events_topic, bench.events),
        **roundtrip(settings, topics, min(bench.roundtrip_messages, bench.events)),
    }
    inputs = {"STEDI_REDIS_TOPIC": customers_topic, "STEDI_EVENTS_TOPIC": events_topic}
    join_out = topics.create("join-out")
    join_env = {
        **inputs,
        "KAFKA_RISK_TOPIC": join_out,
        "STEDI_DEAD_LETTER_TOPIC": topics.create("join-dead"),
    }
    results["join"] = run_backlog(
        "join", join_argv(), join_env, join_out, events_topic, bench.customers, settings, bench
    )
    peer_out = topics.create("peer-out")
    results["peer_join"] = run_backlog(
        "peer",
        peer_argv(),
        {**inputs, "KAFKA_RISK_TOPIC": peer_out},
        peer_out,
        events_topic,
        bench.customers,
        settings,
        bench,
    )
    # The same two jobs on empty topics: what the backlog adds to their wall time.
    empty = {
        "STEDI_REDIS_TOPIC": topics.create("empty-customers"),
        "STEDI_EVENTS_TOPIC": topics.create("empty-events"),
    }
    results["join"]["marginal_s"] = marginal_s(
        "join", join_argv(), {**join_env, **empty}, results["join"], bench
    )
    results["peer_join"]["marginal_s"] = marginal_s(
        "peer", peer_argv(), {**empty, "KAFKA_RISK_TOPIC": peer_out}, results["peer_join"], bench
    )
    results["risk_score"] = run_risk_score(settings, topics, bench)

    stream = run_latency(settings, topics, bench)
    results["latency"] = stream["latency"]
    results["startup_s"] = stream["startup_s"]
    results["driver_peak_rss_mb"] = max(
        results["join"]["driver_peak_rss_mb"], stream["driver_peak_rss_mb"]
    )
    results["join_stream_driver_peak_rss_mb"] = stream["driver_peak_rss_mb"]
    trickle = run_trickle(settings, topics, bench)
    results["join"]["trickle_cpu_s_per_batch"] = trickle["cpu_s_per_batch"]
    results["join"]["trickle"] = trickle
    results["wrappers"] = run_wrappers(topics, bench)
    results["app"] = run_app(settings, bench, topics)
    results["ratios"] = ratios(results)
    results["machine"]["load_average_at_end"] = [round(x, 2) for x in os.getloadavg()]
    return results


def main() -> None:
    settings, bench = Settings(), BenchSettings()
    began = time.monotonic()
    bench.log_dir.mkdir(parents=True, exist_ok=True)
    # First, as a user runs it: `make run` starts the stack itself when it is not up.
    pipeline = run_pipeline(
        bench.pipeline_speed,
        bench.pipeline_seconds,
        bench.log_dir / "pipeline.log",
        bench.pipeline_settle_seconds,
    )
    started = services.up(settings)
    topics = Topics(settings)
    try:
        results = {**measure(settings, bench, topics), "pipeline": pipeline}
    finally:
        topics.delete_all()
        if started:
            services.down(only=started)
    results["bench_seconds"] = round(time.monotonic() - began, 1)
    results["run_id"] = topics.run_id  # in the name of every topic the run made (and deleted)
    bench.results.parent.mkdir(parents=True, exist_ok=True)
    bench.results.write_text(json.dumps(results, indent=2) + "\n")
    print()
    print(table(results))
    print(f"\nwritten to {bench.results} (Spark logs in {bench.log_dir})")


if __name__ == "__main__":
    main()
