"""The I/O around the pure transforms: session, Kafka source and sinks, progress.

pyspark and the standard library only (see stedi/__init__.py).
"""

from __future__ import annotations

import argparse
from collections.abc import Sequence

from pyspark.sql import DataFrame, SparkSession
from pyspark.sql.streaming import StreamingQuery

from stedi.config import Settings

ROCKSDB_PROVIDER = "org.apache.spark.sql.execution.streaming.state.RocksDBStateStoreProvider"


def parse_args(doc: str, argv: Sequence[str] | None = None) -> argparse.Namespace:
    """The options every entry script shares; the script's docstring is its --help."""
    parser = argparse.ArgumentParser(
        description=doc, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--available-now",
        action="store_true",
        help="process every record available now, then exit (Trigger.AvailableNow)",
    )
    return parser.parse_args(argv)


def build_session(app_name: str, settings: Settings, master: str | None = None) -> SparkSession:
    """A session with the RocksDB state store, few shuffle partitions, UTC.

    `master` is for tests; spark-submit passes --master itself.
    """
    builder = (
        SparkSession.builder.appName(app_name)
        .config("spark.sql.shuffle.partitions", str(settings.shuffle_partitions))
        .config("spark.sql.streaming.stateStore.providerClass", ROCKSDB_PROVIDER)
        .config("spark.sql.session.timeZone", "UTC")
    )
    if master:
        builder = builder.master(master)
    spark = builder.getOrCreate()
    spark.sparkContext.setLogLevel("WARN")
    return spark


def read_topic(spark: SparkSession, settings: Settings, topic: str) -> DataFrame:
    """A streaming DataFrame over one Kafka topic.

    `startingOffsets` applies only on a first start; afterwards the checkpoint
    decides where the query resumes.
    """
    return (
        spark.readStream.format("kafka")
        .option("kafka.bootstrap.servers", settings.kafka_bootstrap_servers)
        .option("subscribe", topic)
        .option("startingOffsets", settings.starting_offsets)
        .load()
    )


def _trigger(settings: Settings, available_now: bool) -> dict:
    if available_now:
        return {"availableNow": True}
    return {"processingTime": settings.trigger_interval}


def start_console(
    df: DataFrame, name: str, settings: Settings, available_now: bool
) -> StreamingQuery:
    """Print each micro-batch's new rows to the console."""
    return (
        df.writeStream.queryName(name)
        .format("console")
        .outputMode("append")
        .option("truncate", "false")
        .option("numRows", "1000")
        .option("checkpointLocation", settings.checkpoint(name))
        .trigger(**_trigger(settings, available_now))
        .start()
    )


def start_kafka(
    df: DataFrame, name: str, topic: str, settings: Settings, available_now: bool
) -> StreamingQuery:
    """Write a DataFrame of `key`/`value` columns to a Kafka topic."""
    return (
        df.writeStream.queryName(name)
        .format("kafka")
        .outputMode("append")
        .option("kafka.bootstrap.servers", settings.kafka_bootstrap_servers)
        .option("topic", topic)
        .option("checkpointLocation", settings.checkpoint(name))
        .trigger(**_trigger(settings, available_now))
        .start()
    )


def progress_line(progress: dict) -> str:
    """One line per micro-batch: rows in, rows per second, batch duration, state rows."""
    rate = progress.get("processedRowsPerSecond") or 0.0
    duration = (progress.get("durationMs") or {}).get("triggerExecution", 0)
    state_rows = sum(op.get("numRowsTotal", 0) for op in progress.get("stateOperators") or [])
    line = (
        f"[{progress.get('name')}] batch {progress.get('batchId')}: "
        f"{progress.get('numInputRows', 0)} rows in, {rate:.1f} rows/s, {duration} ms"
    )
    if progress.get("stateOperators"):
        line += f", {state_rows} state rows"
    return line


def _print_new_progress(query: StreamingQuery, last_printed: dict) -> None:
    """Print the batches of `query` newer than the last one printed for it."""
    for progress in query.recentProgress:
        if progress["batchId"] > last_printed.get(query.id, -1):
            last_printed[query.id] = progress["batchId"]
            print(progress_line(progress), flush=True)


def run_queries(spark: SparkSession, queries: Sequence[StreamingQuery]) -> None:
    """Print each query's progress as batches finish; stop all when one ends or fails.

    Progress is read from `recentProgress` by polling rather than from a listener,
    whose asynchronous events can be lost when an --available-now run exits.
    """
    printed: dict = {}  # query id -> last batch id printed
    for query in queries:
        print(f"[{query.name}] started (id {query.id})", flush=True)
    try:
        while all(q.isActive for q in queries):
            for query in queries:
                _print_new_progress(query, printed)
            queries[0].awaitTermination(1)
        failed = [q for q in queries if not q.isActive and q.exception() is not None]
        if failed:
            raise failed[0].exception()  # the others are stopped below
        for query in queries:
            query.awaitTermination()  # the rest of an --available-now run
            _print_new_progress(query, printed)
    except KeyboardInterrupt:
        print("interrupted: stopping queries", flush=True)
    finally:
        for query in queries:
            if query.isActive:
                query.stop()
        spark.stop()
