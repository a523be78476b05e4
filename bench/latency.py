"""Start-up and end-to-end latency of the join running as a stream (no --available-now).

Start-up: from launching ./submit-join.sh to the first record on its output
topic, with customers and one risk score per customer waiting.
Latency: once the waiting scores are out, risk scores are fed at a fixed rate;
each one's latency is the broker's append time of its joined record (the output
topic uses LogAppendTime, whatever timestamp the job sets) minus the record
timestamp the feeder stamped when it sent the score. The score's value names it
(see bench/data.py), since the output carries no riskDate.
"""

from __future__ import annotations

import contextlib
import json
import math
import sys
import tempfile
import time

from bench import data
from bench.settings import ROOT, BenchSettings
from bench.spark_run import SparkRun
from bench.topics import RecordCounter, Topics, read_every_record
from stedi.config import Settings


def percentile(sorted_values: list[float], p: float) -> float:
    """Nearest-rank percentile of an ascending list."""
    rank = max(1, math.ceil(p / 100 * len(sorted_values)))
    return sorted_values[rank - 1]


def wait_for_records(counter: RecordCounter, want: int, run: SparkRun, timeout: float) -> int:
    """Poll the topic's record count until `want`, the run's exit or `timeout`; the last count."""
    deadline, count = time.monotonic() + timeout, 0
    while time.monotonic() < deadline:
        count = counter.count()
        if count >= want:
            return count
        if not run.running:
            raise RuntimeError(f"{run.label} exited early; log {run.log_path}:\n{run.log_tail()}")
        time.sleep(0.1)
    return count


def feed(
    settings: Settings,
    topic: str,
    ids: range,
    customers: int,
    rate: int,
    run: SparkRun,
    output: RecordCounter,
) -> dict[int, int]:
    """Send the scores `ids` at `rate` per second, in 10 ms ticks; score id -> send time (ms)."""
    producer = data.producer(settings, linger_ms=0)
    sent: dict[int, int] = {}
    per_tick = max(1, rate // 100)
    began = time.monotonic()
    next_report = began + 10
    for start in range(ids.start, ids.stop, per_tick):
        tick = began + (start - ids.start) / rate
        pause = tick - time.monotonic()
        if pause > 0:
            time.sleep(pause)
        for score_id in range(start, min(start + per_tick, ids.stop)):
            now_ms = int(time.time() * 1000)
            producer.send(
                topic,
                key=str(now_ms).encode(),
                value=data.risk_value(score_id, customers),
                timestamp_ms=now_ms,
            )
            sent[score_id] = now_ms
        if time.monotonic() >= next_report:
            next_report += 10
            joined = output.count()
            print(
                f"   latency: {len(sent):,} scores fed, {joined:,} joined records so far",
                file=sys.stderr,
                flush=True,
            )
        if not run.running:
            raise RuntimeError(f"{run.label} exited while being fed; log {run.log_path}")
    producer.flush()
    producer.close()
    return sent


def latencies_ms(records: list, sent: dict[int, int]) -> dict[int, float]:
    """Score id -> output append time minus send time, of each fed score's first joined
    record."""
    found: dict[int, float] = {}
    for record in records:
        score_id = data.score_id_of(json.loads(record.value)["score"])
        if score_id in sent and score_id not in found:
            found[score_id] = record.timestamp - sent[score_id]
    return found


def run_latency(settings: Settings, topics: Topics, bench: BenchSettings) -> dict:
    customers = bench.customers
    env = {
        "STEDI_REDIS_TOPIC": topics.create("stream-customers", **{"retention.ms": "-1"}),
        "STEDI_EVENTS_TOPIC": topics.create("stream-events"),
        "KAFKA_RISK_TOPIC": topics.create(
            "stream-out", **{"message.timestamp.type": "LogAppendTime"}
        ),
        "STEDI_DEAD_LETTER_TOPIC": topics.create("stream-dead"),
        "STEDI_STARTING_OFFSETS": "earliest",
        "STEDI_SUBMIT": "local",
        # A fast stream: a trigger set by hand keeps Spark's default JVM, not the trickle's.
        "STEDI_TRIGGER_INTERVAL": "0.5 seconds",
    }
    data.produce_customers(settings, env["STEDI_REDIS_TOPIC"], customers)
    waiting = range(customers)  # one risk score per customer, waiting at start
    data.produce_scores(settings, env["STEDI_EVENTS_TOPIC"], waiting, customers, "start-up")
    fed_ids = range(customers, customers + bench.latency_rate * bench.latency_seconds)

    print(">> start-up and latency: ./submit-join.sh as a stream", file=sys.stderr, flush=True)
    with tempfile.TemporaryDirectory(prefix="bench-checkpoints-") as checkpoints:
        env["STEDI_CHECKPOINT_DIR"] = checkpoints
        argv = [str(ROOT / "submit-join.sh")]
        output = RecordCounter(settings, env["KAFKA_RISK_TOPIC"])
        log = bench.log_dir / "join-stream.log"
        with SparkRun("join-stream", argv, env, log) as run, contextlib.closing(output):
            wait_for_records(output, 1, run, bench.timeout_s)
            startup_s = run.elapsed
            print(
                f"   start-up: first joined record after {startup_s:.1f} s",
                file=sys.stderr,
                flush=True,
            )
            got = wait_for_records(output, len(waiting), run, bench.timeout_s)
            if got < len(waiting):
                raise RuntimeError(f"only {got} of the {len(waiting)} waiting scores were joined")
            print(
                f"   latency: {bench.latency_rate:,} scores/s for {bench.latency_seconds} s",
                file=sys.stderr,
                flush=True,
            )
            began = time.monotonic()
            sent = feed(
                settings,
                env["STEDI_EVENTS_TOPIC"],
                fed_ids,
                customers,
                bench.latency_rate,
                run,
                output,
            )
            fed_seconds = time.monotonic() - began
            # Late records count too: a join that falls behind gets twice the feed's time
            # (at least a minute) to catch up; what is still missing then is reported.
            drain = max(60.0, 2.0 * bench.latency_seconds)
            wait_for_records(output, len(waiting) + len(sent), run, drain)
            run.stop()
    records = read_every_record(settings, env["KAFKA_RISK_TOPIC"])
    found = latencies_ms(records, sent)
    if not found:
        raise RuntimeError(f"none of the {len(sent)} fed scores came out; log {run.log_path}")
    values = sorted(found.values())
    warmup_s = min(bench.latency_warmup_seconds, bench.latency_seconds // 2)
    steady_from_ms = min(sent.values()) + warmup_s * 1000
    steady = sorted(ms for i, ms in found.items() if sent[i] >= steady_from_ms) or values
    return {
        "startup_s": round(startup_s, 1),
        "latency": {
            "rate_eps": round(len(sent) / fed_seconds, 1),
            "seconds": round(fed_seconds, 1),
            "scores": len(sent),
            # Percentiles are of the joined scores; fewer than `scores` means it fell behind.
            "joined": len(values),
            "p50_ms": percentile(values, 50),
            "p99_ms": percentile(values, 99),
            "max_ms": values[-1],
            # the same after the feed's first warmup_s seconds
            "warmup_s": warmup_s,
            "steady_p50_ms": percentile(steady, 50),
            "steady_p99_ms": percentile(steady, 99),
            "customers": customers,
        },
        "driver_peak_rss_mb": run.peak_rss_mb,
    }
