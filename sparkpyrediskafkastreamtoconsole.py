"""Customers from Redis, printed to the console.

Reads topic STEDI_REDIS_TOPIC (default `redis-server`): one record per Redis
write, published by the Redis source. Keeps the members written to the
`Customer` sorted set, decodes them (base64, then JSON) and prints email,
customerName and birthYear per micro-batch. Other keys and commands are
ignored; malformed records never stop the query: they are counted as bad
records in the progress lines (the join job dead-letters them).

This file is all a cluster needs:

    spark-submit --packages org.apache.spark:spark-sql-kafka-0-10_2.13:4.2.0 sparkpyrediskafkastreamtoconsole.py

Options: --available-now (process what is there, then exit). Settings are
environment variables: KAFKA_BOOTSTRAP_SERVERS, STEDI_REDIS_TOPIC,
STEDI_CHECKPOINT_DIR, STEDI_STARTING_OFFSETS, STEDI_TRIGGER_INTERVAL.
In this repository the wrapper adds the connector and the master:

    ./submit-redis.sh                  # run until Ctrl-C
    ./submit-redis.sh --available-now  # process what is there, then exit
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from dataclasses import dataclass, field

from pyspark.sql import Column, DataFrame, SparkSession
from pyspark.sql import functions as F
from pyspark.sql.streaming import StreamingQuery
from pyspark.sql.types import (
    ArrayType,
    BooleanType,
    DoubleType,
    StringType,
    StructField,
    StructType,
)

APP_NAME = "stedi-redis-customers"
QUERY_NAME = "redis-customers-console"


# A copy, as in the risk, join and score scripts: tests/unit/test_scripts_standalone.py keeps them equal.
def _env(name: str, default: str) -> str:
    return os.environ.get(name, "").strip() or default


@dataclass(frozen=True)
class Settings:
    """This job's environment variables (the same names locally and in Docker)."""

    bootstrap_servers: str = field(
        default_factory=lambda: _env("KAFKA_BOOTSTRAP_SERVERS", "localhost:9092")
    )
    topic: str = field(default_factory=lambda: _env("STEDI_REDIS_TOPIC", "redis-server"))
    checkpoint_dir: str = field(
        default_factory=lambda: _env("STEDI_CHECKPOINT_DIR", os.path.abspath("build/checkpoints"))
    )
    starting_offsets: str = field(
        default_factory=lambda: _env("STEDI_STARTING_OFFSETS", "earliest")
    )
    # Zero: the next micro-batch starts as soon as the previous one ends.
    trigger_interval: str = field(
        default_factory=lambda: _env("STEDI_TRIGGER_INTERVAL", "0 seconds")
    )


# --- wire formats (docs/formats.md), never inferred -----------------------------------------
# A record of `redis-server`. Real ZADDs carry the member array twice (`zSetEntries` and
# `zsetEntries`); only the first is declared, since names differing in case alone are
# ambiguous in Spark. SET records carry `value` instead of an array.
# A copy, as in the join and score scripts: tests/unit/test_scripts_standalone.py keeps them equal.
ZSET_ENTRY_SCHEMA = StructType(
    [StructField("element", StringType()), StructField("score", DoubleType())]
)
# A copy, as in the join and score scripts: tests/unit/test_scripts_standalone.py keeps them equal.
REDIS_RECORD_SCHEMA = StructType(
    [
        StructField("key", StringType()),
        StructField("existType", StringType()),
        StructField("ch", BooleanType()),
        StructField("incr", BooleanType()),
        StructField("zSetEntries", ArrayType(ZSET_ENTRY_SCHEMA)),
        StructField("value", StringType()),
    ]
)
# A member of the `Customer` sorted set.
# A copy, as in the join script: tests/unit/test_scripts_standalone.py keeps them equal.
CUSTOMER_SCHEMA = StructType(
    [
        StructField("customerName", StringType()),
        StructField("email", StringType()),
        StructField("phone", StringType()),
        StructField("birthDay", StringType()),
    ]
)
# A copy, as in the join script: tests/unit/test_scripts_standalone.py keeps them equal.
CUSTOMER_KEY = bytearray(b"Customer")
# A copy, as in the risk, join and score scripts: tests/unit/test_scripts_standalone.py keeps them equal.
EMAIL_PATTERN = r"^[^@\s]+@[^@\s]+\.[^@\s]+$"


# --- decoding: pure DataFrame -> DataFrame, built-in functions only -------------------------
# A copy, as in the risk, join and score scripts: tests/unit/test_scripts_standalone.py keeps them equal.
def _text(binary: Column) -> Column:
    """Bytes as text; null when they are not valid UTF-8."""
    return F.try_validate_utf8(binary.cast("string"))


# A copy, as in the join script: tests/unit/test_scripts_standalone.py keeps them equal.
def _base64_text(col: Column) -> Column:
    """Base64 (standard alphabet, padding optional) to UTF-8 text; null when invalid."""
    return _text(F.try_to_binary(col, F.lit("base64")))


# A copy, as in the risk and join scripts: tests/unit/test_scripts_standalone.py keeps them equal.
def _is_json_object(text: Column) -> Column:
    return F.json_object_keys(text).isNotNull()


# A copy, as in the risk, join and score scripts: tests/unit/test_scripts_standalone.py keeps them equal.
def _is_email(text: Column) -> Column:
    return F.coalesce(text.rlike(EMAIL_PATTERN), F.lit(False))


# A copy, as in the join script: tests/unit/test_scripts_standalone.py keeps them equal.
def customer_members(records: DataFrame) -> DataFrame:
    """One row per member written to the `Customer` sorted set of `redis-server`.

    Columns: those of `records`, `member` (index in its ZADD), email,
    customerName, birthYear and `problem` (null for a good customer). Records of
    other keys and SET commands are dropped here: they are not customers. A
    value that is no connector record at all is kept with its problem.
    """
    parsed = records.withColumn("text", _text(F.col("value"))).withColumn(
        "record", F.from_json("text", REDIS_RECORD_SCHEMA)
    )
    # Redis keys are bytes: one that is not UTF-8 is just another key.
    key = F.try_to_binary(F.col("record.key"), F.lit("base64"))
    connector_record = (
        _is_json_object(F.col("text"))
        & F.col("record.key").isNotNull()
        & (F.col("record.zSetEntries").isNotNull() | F.col("record.value").isNotNull())
    )
    record_problem = (
        F.when(F.col("value").isNull(), "value is missing")
        .when(F.col("text").isNull(), "value is not valid UTF-8")
        .when(~connector_record, "value is not a Redis source record")
        .when(key.isNull(), "key is not valid base64")
    )
    is_customer_zadd = (key == F.lit(CUSTOMER_KEY)) & F.col("record.zSetEntries").isNotNull()
    relevant = parsed.where(F.coalesce(record_problem.isNotNull() | is_customer_zadd, F.lit(True)))
    members = relevant.select(
        *records.columns,
        record_problem.alias("recordProblem"),
        # A bad record is one dead letter, not one per member.
        F.posexplode_outer(F.when(record_problem.isNull(), F.col("record.zSetEntries"))).alias(
            "member", "entry"
        ),
    )
    decoded = members.withColumn("json", _base64_text(F.col("entry.element"))).withColumn(
        "customer", F.from_json("json", CUSTOMER_SCHEMA)
    )
    email = F.col("customer.email")
    birth_day = F.try_to_date(F.col("customer.birthDay"), "yyyy-MM-dd")
    problem = F.coalesce(
        F.col("recordProblem"),
        F.when(F.col("entry").isNull(), "Customer ZADD without members")
        .when(
            F.try_to_binary(F.col("entry.element"), F.lit("base64")).isNull(),
            "member is not valid base64",
        )
        .when(F.col("json").isNull(), "member is not valid UTF-8")
        .when(~_is_json_object(F.col("json")), "member is not customer JSON")
        .when(~_is_email(email), "customer email is missing or not an email address")
        .when(birth_day.isNull(), "customer birthDay is missing or not yyyy-MM-dd")
        .when(birth_day > F.current_date(), "customer birthDay is in the future"),
    )
    return decoded.select(
        *records.columns,
        F.col("member"),
        email.alias("email"),
        F.col("customer.customerName").alias("customerName"),
        F.year(birth_day).alias("birthYear"),
        problem.alias("problem"),
    )


def console_rows(records: DataFrame) -> DataFrame:
    """Good customers (email, customerName, birthYear); bad ones are counted, not shown."""
    return (
        customer_members(records)
        .observe("bad_records", F.count_if(F.col("problem").isNotNull()).alias("count"))
        .where(F.col("problem").isNull())
        .select("email", "customerName", "birthYear")
    )


# --- I/O -----------------------------------------------------------------------------------
# Checkpoint files through Hadoop's FileSystem API, not its FileContext API (Spark's
# default): without Hadoop's native library, FileContext forks `chmod`, `stat` and
# `readlink` for each file it writes, 60 processes per micro-batch of a small stateful
# query here, against 12. Both rename a finished file into place.
# A copy, as in the risk, join and score scripts: tests/unit/test_scripts_standalone.py keeps them equal.
CHECKPOINT_FILE_MANAGER = (
    "org.apache.spark.sql.execution.streaming.checkpointing.FileSystemBasedCheckpointFileManager"
)


def session_conf(settings: Settings) -> dict[str, str]:
    """The SQL settings of this job's session (one engine may run several jobs)."""
    return {
        "spark.sql.session.timeZone": "UTC",
        "spark.sql.streaming.checkpointFileManagerClass": CHECKPOINT_FILE_MANAGER,
    }


# A copy, as in the risk script: tests/unit/test_scripts_standalone.py keeps them equal.
def build_session(master: str | None = None) -> SparkSession:
    builder = SparkSession.builder.appName(APP_NAME)
    for key, value in session_conf(Settings()).items():
        builder = builder.config(key, value)
    if master:
        builder = builder.master(master)
    spark = builder.getOrCreate()
    spark.sparkContext.setLogLevel("WARN")
    return spark


# A copy, as in the risk, join and score scripts: tests/unit/test_scripts_standalone.py keeps them equal.
def starting_offsets_for(topic: str, starting_offsets: str) -> str:
    """STEDI_STARTING_OFFSETS for the source of `topic`.

    `earliest` and `latest` apply to every source. A JSON spec such as
    {"redis-server":{"0":42},"stedi-events":{"0":-2}} may name several topics,
    but Spark refuses a spec that names any partition but the source's own: each
    source gets its topic's part, and a topic the spec does not name starts at
    the earliest offset (said on stderr: topic names are case-sensitive).
    """
    if not starting_offsets.startswith("{"):
        return starting_offsets
    try:
        spec = json.loads(starting_offsets)
    except ValueError as exc:
        raise SystemExit(f"STEDI_STARTING_OFFSETS is not valid JSON: {exc}") from None
    if not all(
        isinstance(offsets, dict)
        and offsets
        and all(isinstance(o, int) and not isinstance(o, bool) for o in offsets.values())
        for offsets in spec.values()
    ):
        raise SystemExit(
            'STEDI_STARTING_OFFSETS must map each topic to {"<partition>": <offset>, ...}'
        )
    partitions = spec.get(topic)  # (text that starts with "{" and parses is an object)
    if partitions is None:
        print(f"STEDI_STARTING_OFFSETS names no offsets of {topic}: earliest", file=sys.stderr)
        return "earliest"
    return json.dumps({topic: partitions})


# A copy, as in the risk script: tests/unit/test_scripts_standalone.py keeps them equal.
def read_kafka(spark: SparkSession, settings: Settings) -> DataFrame:
    """The input topic as a stream; `startingOffsets` applies to a first start only."""
    return (
        spark.readStream.format("kafka")
        .option("kafka.bootstrap.servers", settings.bootstrap_servers)
        .option("subscribe", settings.topic)
        .option("startingOffsets", starting_offsets_for(settings.topic, settings.starting_offsets))
        # Spark's cached consumer may hold a fetch the broker keeps open for want of new
        # data; the next batch waits for it. 500 ms by default, a floor under every batch.
        .option("kafka.fetch.max.wait.ms", "50")
        .load()
    )


# A copy, as in the risk script: tests/unit/test_scripts_standalone.py keeps them equal.
def start(spark: SparkSession, settings: Settings, available_now: bool) -> StreamingQuery:
    writer = (
        console_rows(read_kafka(spark, settings))
        .writeStream.queryName(QUERY_NAME)
        .format("console")
        .outputMode("append")
        .option("truncate", "false")
        .option("numRows", "1000")
        .option("checkpointLocation", os.path.join(settings.checkpoint_dir, QUERY_NAME))
    )
    if available_now:
        return writer.trigger(availableNow=True).start()
    return writer.trigger(processingTime=settings.trigger_interval).start()


# A copy, as in the risk script: tests/unit/test_scripts_standalone.py keeps them equal.
def progress_line(progress: dict) -> str:
    """`[<query>] batch <id>: <n> rows in, <r> rows/s, <ms> ms, <s> state rows, <b> bad records`.

    The benchmark parses this line: keep its fields and their order.
    """
    rate = progress.get("processedRowsPerSecond") or 0.0
    duration = (progress.get("durationMs") or {}).get("triggerExecution", 0)
    state_rows = sum(op.get("numRowsTotal", 0) for op in progress.get("stateOperators") or [])
    observed = (progress.get("observedMetrics") or {}).get("bad_records")
    bad = 0 if observed is None else observed["count"]  # a Row, or a dict from JSON
    return (
        f"[{progress.get('name')}] batch {progress.get('batchId')}: "
        f"{progress.get('numInputRows', 0)} rows in, {rate:.1f} rows/s, {duration} ms, "
        f"{state_rows} state rows, {bad} bad records"
    )


# How often the driver looks for new progress: each look is a call into the JVM, so not
# more than once a second (four jobs polling 5 times a second took a quarter of a core).
# A copy, as in the risk, join and score scripts: tests/unit/test_scripts_standalone.py keeps them equal.
PROGRESS_POLL_S = 1.0


# A copy, as in the risk and join scripts: tests/unit/test_scripts_standalone.py keeps them equal.
def print_new_batches(query: StreamingQuery, last: int) -> int:
    """Prints the progress lines of batches after `last`; returns the newest batch id.

    Reads the last progress (one JSON document), and the recent ones (up to 100)
    only when more than one batch ended since the last look.
    """
    latest = query.lastProgress
    if latest is None or latest["batchId"] <= last:
        return last
    if latest["batchId"] == last + 1:
        news = [latest]
    else:
        news = [p for p in query.recentProgress if p["batchId"] > last]
    for progress in news:
        print(progress_line(progress), flush=True)
    return max(p["batchId"] for p in news)


# A copy, as in the risk and join scripts: tests/unit/test_scripts_standalone.py keeps them equal.
def run(spark: SparkSession, settings: Settings, available_now: bool) -> None:
    """Runs the query, printing one progress line per batch.

    A failed query (e.g. the broker gone for longer than the clients wait)
    restarts from its checkpoint after a back-off of 1 s doubling to 15 s; an
    --available-now run fails instead.
    """
    backoff = 1.0
    while True:
        query = start(spark, settings, available_now)
        print(f"[{query.name}] started (id {query.id})", flush=True)
        last = -1
        try:
            active = True
            while active:
                active = query.isActive  # read first: the last batches are printed below too
                time.sleep(PROGRESS_POLL_S if active else 0)  # not awaitTermination: it raises
                if (newest := print_new_batches(query, last)) > last:
                    last, backoff = newest, 1.0
        except KeyboardInterrupt:
            print("interrupted: stopping the query", flush=True)
            query.stop()
            return
        error = query.exception()
        if error is None:
            return
        if available_now:
            raise SystemExit(f"[{query.name}] failed: {error}")
        print(f"[{query.name}] failed, restarting in {backoff:.0f} s: {error}", flush=True)
        time.sleep(backoff)
        backoff = min(backoff * 2, 15.0)


# A copy, as in the risk script: tests/unit/test_scripts_standalone.py keeps them equal.
def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--available-now", action="store_true", help="process what is there, then exit"
    )
    args = parser.parse_args(argv)
    settings = Settings()
    spark = build_session()
    try:
        run(spark, settings, args.available_now)
    finally:
        spark.stop()


if __name__ == "__main__":
    main(sys.argv[1:])
