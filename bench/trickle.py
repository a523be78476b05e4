"""The join's fixed cost per micro-batch, at the app's real pace.

./submit-join.sh runs as a stream, as a course user runs it, while one risk score and
one rapid step test record (what the app and the Redis source publish for each test)
arrive every BENCH_TRICKLE_INTERVAL_MS: each makes one micro-batch. After the start-up
and BENCH_TRICKLE_SETTLE_SECONDS, the spark-submit JVM's CPU time over
BENCH_TRICKLE_SECONDS, divided by the micro-batches with data in that window, is
`cpu_s_per_batch`; `startup_s` is its launch to the first output record.
"""

from __future__ import annotations

import sys
import tempfile
import threading
import time

from bench import data
from bench.latency import wait_for_records
from bench.pipeline import cpu_seconds
from bench.settings import ROOT, BenchSettings
from bench.spark_run import SparkRun
from bench.topics import RecordCounter, Topics
from stedi.config import Settings
from tests.records import step_test_record


def feed_trickle(settings: Settings, env: dict, customers: int, interval_s: float, stop) -> None:
    """A score and a test record every `interval_s` until `stop` is set."""
    producer = data.producer(settings, linger_ms=0)
    n = 0
    while not stop.is_set():
        test = data.step_test(n)
        who = data.bench_customer(n % customers)
        producer.send(
            env["STEDI_REDIS_TOPIC"],
            key=b"RapidStepTest",
            value=step_test_record(who, test.stop_ms, test.duration_ms).encode(),
        )
        producer.send(env["STEDI_EVENTS_TOPIC"], value=data.risk_value(n, customers))
        producer.flush()
        n += 1
        stop.wait(interval_s)
    producer.close()


def run_trickle(settings: Settings, topics: Topics, bench: BenchSettings) -> dict:
    env = {
        "STEDI_REDIS_TOPIC": topics.create("trickle-customers", **{"retention.ms": "-1"}),
        "STEDI_EVENTS_TOPIC": topics.create("trickle-events"),
        "KAFKA_RISK_TOPIC": topics.create("trickle-out"),
        "STEDI_DEAD_LETTER_TOPIC": topics.create("trickle-dead"),
        "STEDI_STARTING_OFFSETS": "earliest",
        "STEDI_SUBMIT": "local",
    }
    data.produce_customers(settings, env["STEDI_REDIS_TOPIC"], bench.customers)
    interval_s = bench.trickle_interval_ms / 1000
    print(
        f">> trickle: ./submit-join.sh as a stream, a score every {interval_s:g} s",
        file=sys.stderr,
        flush=True,
    )
    stop = threading.Event()
    feeder = threading.Thread(
        target=feed_trickle, args=(settings, env, bench.customers, interval_s, stop), daemon=True
    )
    output = RecordCounter(settings, env["KAFKA_RISK_TOPIC"])
    with tempfile.TemporaryDirectory(prefix="bench-checkpoints-") as checkpoints:
        env["STEDI_CHECKPOINT_DIR"] = checkpoints
        log = bench.log_dir / "join-trickle.log"
        with SparkRun("join-trickle", [str(ROOT / "submit-join.sh")], env, log) as run:
            feeder.start()
            try:
                wait_for_records(output, 1, run, bench.timeout_s)
                startup_s = run.elapsed
                time.sleep(bench.trickle_settle_seconds)
                first_cpu, first_batch = cpu_seconds(run.jvm_pid), len(run.batches)
                began = time.monotonic()
                time.sleep(bench.trickle_seconds)
                cpu = cpu_seconds(run.jvm_pid) - first_cpu
                seconds = time.monotonic() - began
                window = run.batches[first_batch:]
            finally:
                stop.set()
                feeder.join()
                output.close()
    batches = sum(1 for b in window if b.rows > 0)
    if not batches:
        raise RuntimeError(f"the trickle made no micro-batch; log {run.log_path}")
    return {
        "cpu_s_per_batch": round(cpu / batches, 3),
        "batches": batches,
        "seconds": round(seconds, 1),
        "cores": round(cpu / seconds, 3),
        "interval_ms": bench.trickle_interval_ms,
        # launch to the first output, with the trickle's JVM (the latency run's is Spark's)
        "startup_s": round(startup_s, 1),
    }
