"""The workload that makes Spark's class data archive (`make install`: build/cds/spark.jsa).

A Spark driver JVM loads and verifies some 20,000 classes before its first micro-batch.
The JVM's class data sharing (CDS) maps them, already parsed and verified, from an archive
instead; bin/submit and the tests' in-process Spark use the archive when it is there
(`-XX:SharedArchiveFile`), which takes about a third of the CPU off each JVM start.
The JVM writes the archive as it exits (`-XX:ArchiveClassesAtExit`) with the classes it
loaded, so this run loads what the jobs load: it runs each entry script's own
transformations, in a session of its own, for a few micro-batches with state, on
rows shaped as Kafka's (from Spark's rate source: no broker is needed at install).

Run by the Makefile through bin/submit; it prints one line per job.
"""

from __future__ import annotations

import sys
import tempfile
import time
from pathlib import Path

from pyspark.sql import DataFrame, SparkSession
from pyspark.sql import functions as F

from stedi.stack.engine import load_script

BATCHES = 3  # micro-batches per job: the first plans, the later ones reuse state
TIMEOUT_S = 120


def kafka_shaped(spark: SparkSession, topic: str) -> DataFrame:
    """A stream with the Kafka source's columns: a few records a second, values that are
    not valid (the jobs' checks and dead-letter paths run on them)."""
    return (
        spark.readStream.format("rate")
        .option("rowsPerSecond", 5)
        .load()
        .select(
            F.lit(None).cast("binary").alias("key"),
            F.encode(F.format_string('{"n": %d}', "value"), "UTF-8").alias("value"),
            F.lit(topic).alias("topic"),
            F.lit(0).alias("partition"),
            F.col("value").alias("offset"),
            F.col("timestamp"),
            F.lit(0).alias("timestampType"),
        )
    )


HOUR_MS = 3_600_000
# Each entry script's transformations, from its two topics' records (one, for a console).
TRANSFORMS = {
    "sparkpyrediskafkastreamtoconsole.py": lambda job, redis, events: job.console_rows(redis),
    "sparkpyeventskafkastreamtoconsole.py": lambda job, redis, events: job.console_rows(events),
    "sparkpykafkajoin.py": lambda job, redis, events: job.customer_risk(redis, events, HOUR_MS),
    "sparkpyriskscore.py": lambda job, redis, events: job.risk_score(redis, events, HOUR_MS),
}


def job_frames(spark: SparkSession) -> dict[str, DataFrame]:
    """Each entry script's query on Kafka-shaped rows, in a session of its own with the
    settings its `start_query` sets."""
    frames = {}
    rocksdb = load_script("sparkpykafkajoin.py").STATE_STORES["rocksdb"]  # the jobs' default
    for script, transform in TRANSFORMS.items():
        job, session = load_script(script), spark.newSession()
        conf = {"spark.sql.streaming.stateStore.providerClass": rocksdb}
        for key, value in {**conf, **getattr(job, "QUERY_CONF", {})}.items():
            session.conf.set(key, value)
        redis, events = (kafka_shaped(session, topic) for topic in ("redis-server", "stedi-events"))
        frames[script] = transform(job, redis, events)
    return frames


def run(spark: SparkSession, checkpoints: Path) -> None:
    queries = {
        name: frame.writeStream.format("noop")
        .trigger(processingTime="1 second")
        .option("checkpointLocation", str(checkpoints / name))
        .start()
        for name, frame in job_frames(spark).items()
    }
    deadline = time.monotonic() + TIMEOUT_S
    try:
        for name, query in queries.items():
            while (query.lastProgress or {}).get("batchId", -1) < BATCHES - 1:
                if query.exception() is not None:
                    raise SystemExit(f"{name} failed: {query.exception()}")
                if time.monotonic() > deadline:
                    raise SystemExit(f"{name}: no {BATCHES} micro-batches in {TIMEOUT_S} s")
                time.sleep(0.5)
            print(f"{name}: {BATCHES} micro-batches", flush=True)
    finally:
        for query in queries.values():
            query.stop()


def main() -> int:
    spark = SparkSession.builder.appName("stedi-class-archive").getOrCreate()
    spark.sparkContext.setLogLevel("ERROR")
    with tempfile.TemporaryDirectory(prefix="stedi-cds-") as folder:
        run(spark, Path(folder))
    spark.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
