"""Risk scores joined with customer birth years, written to Kafka.

Reads STEDI_REDIS_TOPIC (default `redis-server`: customers, as the Redis
source publishes them) and STEDI_EVENTS_TOPIC (default `stedi-events`: risk
scores from the STEDI app), one Kafka source each, inner-joins them on email and
writes one JSON record per risk score to KAFKA_RISK_TOPIC (default
`customer-risk`), keyed by email, with the score's riskDate in a `riskDate`
header (so a reader tells assessments, and repeats of one, apart):

    {"customer":"Santosh.Fibonnaci@test.com","score":28.5,
     "email":"Santosh.Fibonnaci@test.com","birthYear":1963}

- Event time is arrival time (the micro-batch time), so no record is ever late.
- A customer stays joinable for as long as the query's checkpoint lives; the
  first version of an email wins.
- A risk score joins at once when its customer is known, else waits up to
  STEDI_RISK_WAIT (default `1 hour`) for it, and leaves the state after that
  wait. Each assessment (customer, score, riskDate) gives one output: a repeat
  of its record within the wait gives none. (This job's Kafka sink is at least
  once: a restart may write its last micro-batch again.)
- Malformed records go to STEDI_DEAD_LETTER_TOPIC (default `stedi-dead-letter`),
  written by the same query: source topic, partition, offset, timestamp,
  reason, member index and the value (at most 64 KiB, with its length and hash).

This file is all a cluster needs:

    spark-submit --packages org.apache.spark:spark-sql-kafka-0-10_2.13:4.2.0 sparkpykafkajoin.py

Options: --available-now (process what is there, then exit). Settings are
environment variables: KAFKA_BOOTSTRAP_SERVERS, STEDI_REDIS_TOPIC,
STEDI_EVENTS_TOPIC, KAFKA_RISK_TOPIC, STEDI_DEAD_LETTER_TOPIC,
STEDI_CHECKPOINT_DIR, STEDI_STARTING_OFFSETS, STEDI_RISK_WAIT,
STEDI_SHUFFLE_PARTITIONS, STEDI_TRIGGER_INTERVAL, STEDI_STATE_STORE,
STEDI_KAFKA_TIMEOUT_MS.
In this repository the wrapper adds the connector and the master:

    ./submit-join.sh                  # run until Ctrl-C
    ./submit-join.sh --available-now  # process what is there, then exit
"""

from __future__ import annotations

import argparse
import json
import os
import re
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

APP_NAME = "stedi-customer-risk"
QUERY_NAME = "customer-risk-join"
# The checkpoint's folder. Renamed when a change to the plan's state makes an older
# checkpoint unusable (v2: the repeat filter and the shared shuffles): the new query
# then rebuilds from the topics, and the old folder can be deleted.
CHECKPOINT_NAME = "customer-risk-join-v2"


# A copy, as in the customers, risk and score scripts: tests/unit/test_scripts_standalone.py keeps them equal.
def _env(name: str, default: str) -> str:
    return os.environ.get(name, "").strip() or default


@dataclass(frozen=True)
class Settings:
    """This job's environment variables (the same names locally and in Docker)."""

    bootstrap_servers: str = field(
        default_factory=lambda: _env("KAFKA_BOOTSTRAP_SERVERS", "localhost:9092")
    )
    redis_topic: str = field(default_factory=lambda: _env("STEDI_REDIS_TOPIC", "redis-server"))
    events_topic: str = field(default_factory=lambda: _env("STEDI_EVENTS_TOPIC", "stedi-events"))
    risk_topic: str = field(default_factory=lambda: _env("KAFKA_RISK_TOPIC", "customer-risk"))
    dead_letter_topic: str = field(
        default_factory=lambda: _env("STEDI_DEAD_LETTER_TOPIC", "stedi-dead-letter")
    )
    checkpoint_dir: str = field(
        default_factory=lambda: _env("STEDI_CHECKPOINT_DIR", os.path.abspath("build/checkpoints"))
    )
    starting_offsets: str = field(
        default_factory=lambda: _env("STEDI_STARTING_OFFSETS", "earliest")
    )
    # How long a risk score waits for a customer that has not arrived (a Spark interval).
    risk_wait: str = field(default_factory=lambda: _env("STEDI_RISK_WAIT", "1 hour"))
    # Each shuffle partition is one instance of every state store: few is faster here.
    shuffle_partitions: str = field(default_factory=lambda: _env("STEDI_SHUFFLE_PARTITIONS", "2"))
    # Empty: the next micro-batch starts as soon as the previous one ends.
    trigger_interval: str = field(
        default_factory=lambda: _env("STEDI_TRIGGER_INTERVAL", "0 seconds")
    )
    state_store: str = field(default_factory=lambda: _env("STEDI_STATE_STORE", "rocksdb"))
    # How long the Kafka clients wait for the broker, in ms (see kafka_timeouts); unset:
    # Kafka's and Spark's own. A broker gone for longer fails the query, which restarts.
    kafka_timeout_ms: str = field(default_factory=lambda: _env("STEDI_KAFKA_TIMEOUT_MS", ""))


# --- wire formats (docs/formats.md), never inferred -----------------------------------------
# A record of `redis-server`. Real ZADDs carry the member array twice (`zSetEntries` and
# `zsetEntries`); only the first is declared, since names differing in case alone are
# ambiguous in Spark. SET records carry `value` instead of an array.
# A copy, as in the customers and score scripts: tests/unit/test_scripts_standalone.py keeps them equal.
ZSET_ENTRY_SCHEMA = StructType(
    [StructField("element", StringType()), StructField("score", DoubleType())]
)
# A copy, as in the customers and score scripts: tests/unit/test_scripts_standalone.py keeps them equal.
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
# A copy, as in the customers script: tests/unit/test_scripts_standalone.py keeps them equal.
CUSTOMER_SCHEMA = StructType(
    [
        StructField("customerName", StringType()),
        StructField("email", StringType()),
        StructField("phone", StringType()),
        StructField("birthDay", StringType()),
    ]
)
# A record of `stedi-events`; `score` may be an integer or a decimal JSON number.
# A copy, as in the risk and score scripts: tests/unit/test_scripts_standalone.py keeps them equal.
RISK_EVENT_SCHEMA = StructType(
    [
        StructField("customer", StringType()),
        StructField("score", DoubleType()),
        StructField("riskDate", StringType()),
    ]
)

# A copy, as in the customers script: tests/unit/test_scripts_standalone.py keeps them equal.
CUSTOMER_KEY = bytearray(b"Customer")
# A copy, as in the customers, risk and score scripts: tests/unit/test_scripts_standalone.py keeps them equal.
EMAIL_PATTERN = r"^[^@\s]+@[^@\s]+\.[^@\s]+$"
# An ISO-8601 instant with a four-digit year (the app writes 2020-09-14T07:54:06.417Z);
# Spark's lenient parser alone would also take "-1000" or "2020" as a time.
# A copy, as in the risk script: tests/unit/test_scripts_standalone.py keeps them equal.
ISO_INSTANT_PATTERN = r"^\d{4}-\d\d-\d\dT\d\d:\d\d(:\d\d(\.\d{1,9})?)?(Z|[+-]\d\d:?\d\d)$"
# A copy, as in the score script: tests/unit/test_scripts_standalone.py keeps them equal.
DEAD_LETTER_VALUE_BYTES = 64 * 1024
# The app's and the score job's spelling of a riskDate (ISO-8601, UTC, milliseconds).
# A copy, as in the score script: tests/unit/test_scripts_standalone.py keeps them equal.
RISK_DATE_FORMAT = "yyyy-MM-dd'T'HH:mm:ss.SSS'Z'"


# --- decoding: pure DataFrame -> DataFrame, built-in functions only -------------------------
# A copy, as in the customers, risk and score scripts: tests/unit/test_scripts_standalone.py keeps them equal.
def _text(binary: Column) -> Column:
    """Bytes as text; null when they are not valid UTF-8."""
    return F.try_validate_utf8(binary.cast("string"))


# A copy, as in the customers script: tests/unit/test_scripts_standalone.py keeps them equal.
def _base64_text(col: Column) -> Column:
    """Base64 (standard alphabet, padding optional) to UTF-8 text; null when invalid."""
    return _text(F.try_to_binary(col, F.lit("base64")))


# A copy, as in the customers and risk scripts: tests/unit/test_scripts_standalone.py keeps them equal.
def _is_json_object(text: Column) -> Column:
    return F.json_object_keys(text).isNotNull()


# A copy, as in the customers, risk and score scripts: tests/unit/test_scripts_standalone.py keeps them equal.
def _is_email(text: Column) -> Column:
    return F.coalesce(text.rlike(EMAIL_PATTERN), F.lit(False))


# A copy, as in the risk script: tests/unit/test_scripts_standalone.py keeps them equal.
def _is_finite(number: Column) -> Column:
    return ~F.isnan(number) & (F.abs(number) != F.lit(float("inf")))


# A copy, as in the customers script: tests/unit/test_scripts_standalone.py keeps them equal.
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


# A copy, as in the risk script: tests/unit/test_scripts_standalone.py keeps them equal.
def risk_events(records: DataFrame) -> DataFrame:
    """Every record of `stedi-events`, parsed: its columns, customer, score, riskDate, `problem`."""
    parsed = records.withColumn("text", _text(F.col("value"))).withColumn(
        "event", F.from_json("text", RISK_EVENT_SCHEMA)
    )
    score = F.col("event.score")
    risk_date = F.when(
        F.col("event.riskDate").rlike(ISO_INSTANT_PATTERN),
        F.try_to_timestamp(F.col("event.riskDate")),
    )
    problem = (
        F.when(F.col("value").isNull(), "value is missing")
        .when(F.col("text").isNull(), "value is not valid UTF-8")
        .when(~_is_json_object(F.col("text")), "value is not a JSON object")
        .when(~_is_email(F.col("event.customer")), "customer is missing or not an email address")
        .when(score.isNull(), "score is missing or not a number")
        .when(~_is_finite(score), "score is not a finite number")
        .when(risk_date.isNull(), "riskDate is missing or not an ISO-8601 time")
    )
    return parsed.select(
        *records.columns,
        F.col("event.customer").alias("customer"),
        score.alias("score"),
        risk_date.alias("riskDate"),
        problem.alias("problem"),
    )


def dead_letter(member: Column | None = None) -> tuple[Column, Column]:
    """The dead-letter record (`key`, `value`) of a row with a problem; nulls for a good row.

    Each is well under 1 MiB: the raw value is cut to 64 KiB (as UTF-8 text,
    invalid bytes replaced), and its full length and SHA-256 tell the original apart.
    """
    member = F.lit(None).cast("int") if member is None else member
    raw = F.coalesce(F.col("value"), F.lit(b""))
    bad = F.col("problem").isNotNull()
    key = F.concat_ws("/", "topic", "partition", "offset")
    value = F.to_json(
        F.struct(
            F.col("topic").alias("sourceTopic"),
            F.col("partition").alias("sourcePartition"),
            F.col("offset").alias("sourceOffset"),
            F.date_format("timestamp", "yyyy-MM-dd'T'HH:mm:ss.SSSXXX").alias("sourceTimestamp"),
            F.col("problem").alias("reason"),
            member.alias("member"),
            F.octet_length(raw).alias("valueBytes"),
            F.sha2(raw, 256).alias("valueSha256"),
            F.make_valid_utf8(F.substring(raw, 1, DEAD_LETTER_VALUE_BYTES).cast("string")).alias(
                "value"
            ),
        )
    )
    return F.when(bad, key).alias("letterKey"), F.when(bad, value).alias("letterValue")


def checked_once(rows: DataFrame, keys: list[str], name: str) -> DataFrame:
    """`rows`, decoded once per micro-batch for both of their uses: good rows and dead letters.

    Spark reads and decodes a source once per branch of the plan that uses it. Here
    both branches start from one shuffle by `keys` (the next stateful operator's key,
    so it needs no other), which Spark runs once and reuses (ReusedExchange).
    The observation between the shuffle and the branches keeps the optimizer from
    making them two different shuffles: it pushes no filter through an observation,
    and its `checksum` (a hash per row, of no other use) reads every column, so no
    branch prunes one below it. It also counts the dead letters, the progress line's.
    """
    return rows.repartition(*keys).observe(
        name,
        F.max(F.hash(*rows.columns)).alias("checksum"),
        F.count_if(F.col("problem").isNotNull()).alias("dead_letters"),
    )


def checked_dead_letters(checked: DataFrame) -> DataFrame:
    """The dead-letter records of checked rows (see checked_once), computed before the shuffle."""
    return checked.where(F.col("problem").isNotNull()).select(
        F.col("letterKey").alias("key"), F.col("letterValue").alias("value")
    )


# --- the join ------------------------------------------------------------------------------
def interval_ms(text: str) -> int:
    """A Spark interval such as `1 hour` or `1 hour 30 minutes`, in milliseconds.

    Raises ValueError for anything else: the join needs the wait as a number (see
    scores_with_watermark).
    """
    pairs = INTERVAL_PART.findall(text)
    if not pairs or INTERVAL_PART.sub("", text).strip().lower() not in ("", "interval"):
        raise ValueError(f"not an interval such as '1 hour' or '30 minutes': {text!r}")
    return round(sum(float(number) * INTERVAL_UNITS_MS[unit.lower()] for number, unit in pairs))


INTERVAL_UNITS_MS = {
    **dict.fromkeys(("week", "weeks"), 7 * 86_400_000),
    **dict.fromkeys(("day", "days"), 86_400_000),
    **dict.fromkeys(("hour", "hours"), 3_600_000),
    **dict.fromkeys(("minute", "minutes"), 60_000),
    **dict.fromkeys(("second", "seconds"), 1_000),
    **dict.fromkeys(("millisecond", "milliseconds"), 1),
}
INTERVAL_PART = re.compile(
    r"(\d+(?:\.\d+)?)\s*(" + "|".join(sorted(INTERVAL_UNITS_MS, key=len, reverse=True)) + r")\b",
    re.IGNORECASE,
)


def with_arrival_time(records: DataFrame) -> DataFrame:
    """Adds `arrival`, the micro-batch's time, the event time of everything downstream.

    Kafka record times would make old customers (or a replay on a rebuild) older
    than the watermark, so a stream-stream join would drop them as late. A
    batch's own time is never older than the watermark (about the previous
    batch's time, see below), so no record is ever late.
    """
    return records.withColumn("arrival", F.current_timestamp())


def customers_with_watermark(members: DataFrame) -> DataFrame:
    """Customers' event time is their arrival, with no delay."""
    return members.withWatermark("arrival", "0 seconds")


def scores_with_watermark(events: DataFrame, wait_ms: int) -> DataFrame:
    """Scores' event time is `waitMiddle`, the middle of their wait: arrival + wait/2,
    with a delay of wait/2.

    Two operators keep a score for its wait, no longer: the repeat filter
    (dropDuplicatesWithinWatermark keeps a key until the watermark passes its event
    time + the delay: arrival + wait) and the join (its condition keeps a score until
    the watermark passes arrival + wait). And this input's share of the query's
    watermark stays the latest arrival: max(waitMiddle) - wait/2. (With the arrival
    and a delay of a whole wait, the watermark would lag a wait behind while no
    customer arrives, and both would keep scores for two waits.)
    """
    half = wait_ms // 2
    return events.withColumn(
        "waitMiddle", F.col("arrival") + F.expr(f"INTERVAL {wait_ms - half} MILLISECONDS")
    ).withWatermark("waitMiddle", f"{half} milliseconds")


def checked_customers(members: DataFrame) -> DataFrame:
    """Customer members with only what the join and the dead letters need, by email
    (the key of unique_customers and of the join)."""
    return checked_once(
        members.select("email", "birthYear", "arrival", "problem", *dead_letter(F.col("member"))),
        ["email"],
        "customer_checks",
    )


SCORE_KEY = ["customer", "score", "riskDate"]  # one assessment


def checked_risk_events(events: DataFrame) -> DataFrame:
    """Risk events with only what the join and the dead letters need, by SCORE_KEY
    (the key of unique_scores)."""
    return checked_once(
        events.select(*SCORE_KEY, "waitMiddle", "problem", *dead_letter()),
        SCORE_KEY,
        "event_checks",
    )


def unique_customers(checked: DataFrame) -> DataFrame:
    """Good customers, the first version of each email only, kept forever.

    The dedup keys hold no event time, so Spark keeps one state row per email
    and never evicts it; `arrival` rides along for the join's time condition.
    """
    return (
        checked.where(F.col("problem").isNull())
        .select("email", "birthYear", "arrival")
        .dropDuplicates(["email"])
    )


def unique_scores(checked: DataFrame) -> DataFrame:
    """Good risk scores, each assessment (customer, score, riskDate) once within its wait.

    A repeat of a record (a producer's retry, a replay) arriving within the wait
    gives no second output; a key leaves the state after the wait (see
    scores_with_watermark). A repeat arriving later joins again.
    """
    return (
        checked.where(F.col("problem").isNull())
        .select(*SCORE_KEY, "waitMiddle")
        .dropDuplicatesWithinWatermark(SCORE_KEY)
    )


def join_risk_with_customers(customers: DataFrame, risks: DataFrame, wait_ms: int) -> DataFrame:
    """Inner join on email: a risk score waits up to `wait_ms` (arrival time) for its customer.

    The condition is `c.arrival <= r.arrival + wait`, written with the score's
    `waitMiddle` (= arrival + wait - wait/2). Customers have no lower time bound in
    it, so the join never evicts them. A score leaves the state once the watermark
    (the latest arrival) passes its arrival by the wait, joined or not.
    """
    c, r = customers.alias("c"), risks.alias("r")
    condition = F.expr(
        f"r.customer = c.email AND c.arrival <= r.waitMiddle + INTERVAL {wait_ms // 2} MILLISECONDS"
    )
    return r.join(c, condition, "inner").select(
        F.col("r.customer").alias("customer"),
        F.col("r.score").alias("score"),
        F.col("c.email").alias("email"),
        F.col("c.birthYear").alias("birthYear"),
        F.col("r.riskDate").alias("riskDate"),
    )


def customer_risk_records(joined: DataFrame) -> DataFrame:
    """Output records: key = email, value = the spec's JSON (no phone, no birth date),
    header `riskDate` = the score's riskDate as UTF-8 text.

    The header tells assessments apart, and a repeat (a rewritten micro-batch) is the
    same key, value and header. The riskDate is written in RISK_DATE_FORMAT (the
    session is UTC): for the app's and the score job's records, the text that arrived.
    """
    risk_date = F.date_format("riskDate", RISK_DATE_FORMAT)
    return joined.select(
        F.col("email").alias("key"),
        F.to_json(F.struct("customer", "score", "email", "birthYear")).alias("value"),
        F.array(
            F.struct(F.lit("riskDate").alias("key"), F.encode(risk_date, "UTF-8").alias("value"))
        ).alias("headers"),
    )


def pipeline(
    customer_records: DataFrame, event_records: DataFrame, settings: Settings
) -> DataFrame:
    """Kafka records of `redis-server` and `stedi-events` -> (topic, key, value, headers) rows.

    One Kafka sink: the joined records go to the output topic, the dead
    letters of both inputs (no headers) to the dead-letter topic.
    """
    wait_ms = interval_ms(settings.risk_wait)
    customers = checked_customers(
        customers_with_watermark(customer_members(with_arrival_time(customer_records)))
    )
    events = checked_risk_events(
        scores_with_watermark(risk_events(with_arrival_time(event_records)), wait_ms)
    )
    joined = customer_risk_records(
        join_risk_with_customers(unique_customers(customers), unique_scores(events), wait_ms)
    ).withColumn("topic", F.lit(settings.risk_topic))
    letters = (
        checked_dead_letters(customers)
        .unionByName(checked_dead_letters(events))
        .withColumn("topic", F.lit(settings.dead_letter_topic))
    )
    return joined.unionByName(letters, allowMissingColumns=True)  # letters: null headers


# --- I/O -----------------------------------------------------------------------------------
# A copy, as in the score script: tests/unit/test_scripts_standalone.py keeps them equal.
STATE_STORES = {
    "rocksdb": "org.apache.spark.sql.execution.streaming.state.RocksDBStateStoreProvider",
    "hdfs": "org.apache.spark.sql.execution.streaming.state.HDFSBackedStateStoreProvider",
}


# Each input has a watermark on its arrival time, one clock (the batch's time): the
# latest of the two is the query's watermark, so scores are evicted by their own arrivals
# even while no customer arrives (the default, the earliest, would wait for one).
# No micro-batch only to evict state: the next batch with data evicts it.
QUERY_CONF = {
    "spark.sql.streaming.multipleWatermarkPolicy": "max",
    "spark.sql.streaming.noDataMicroBatches.enabled": "false",
}


# Expressions interpreted, not compiled: the arrival time (the batch's time) is a literal
# that generated code inlines, so the join's code was new in every micro-batch, compiled by
# Janino and then by the JIT each time. Interpreted, a stream of 1,000 scores/s ran batches
# of about 1,000 scores in 0.7 to 1.4 s instead of 2,400 in 1.4 to 3.8 s, and the backlog
# of 200,000 took no longer (docs/performance.md, "What was tried").
INTERPRETED_CONF = {
    "spark.sql.codegen.wholeStage": "false",
    "spark.sql.codegen.factoryMode": "NO_CODEGEN",
}


# Checkpoint files through Hadoop's FileSystem API, not its FileContext API (Spark's
# default): without Hadoop's native library, FileContext forks `chmod`, `stat` and
# `readlink` for each file it writes, 60 processes per micro-batch of a small stateful
# query here, against 12. Both rename a finished file into place.
# A copy, as in the customers, risk and score scripts: tests/unit/test_scripts_standalone.py keeps them equal.
CHECKPOINT_FILE_MANAGER = (
    "org.apache.spark.sql.execution.streaming.checkpointing.FileSystemBasedCheckpointFileManager"
)


def session_conf(settings: Settings) -> dict[str, str]:
    """Few shuffle partitions (each is a state store instance), UTC, the chosen state
    store, QUERY_CONF, INTERPRETED_CONF: the SQL settings of this job's session (one
    engine may run several)."""
    return {
        "spark.sql.shuffle.partitions": settings.shuffle_partitions,
        "spark.sql.streaming.stateStore.providerClass": STATE_STORES[settings.state_store],
        "spark.sql.streaming.stateStore.rocksdb.changelogCheckpointing.enabled": "true",
        "spark.sql.session.timeZone": "UTC",
        "spark.sql.streaming.checkpointFileManagerClass": CHECKPOINT_FILE_MANAGER,
        **QUERY_CONF,
        **INTERPRETED_CONF,
    }


# Hadoop's defaults for YARN and MapReduce: 721 of the 1,102 entries of the driver's
# Hadoop configuration, of no use to a local driver (no YARN, no MapReduce: this job reads
# and writes Kafka and keeps its checkpoint in files). The stream-stream join operator
# broadcasts the whole configuration each time the planner builds it, several times a
# micro-batch: without them, a trickle's micro-batch took 12% less CPU and 40 ms less
# planning (docs/performance.md).
UNUSED_LOCAL_DEFAULTS = ("yarn-default.xml", "mapred-default.xml")


def unused_hadoop_defaults(dump: str) -> list[str]:
    """The keys of a Hadoop configuration dump (the JSON of Configuration.dumpConfiguration)
    whose value comes from UNUSED_LOCAL_DEFAULTS. A value set anywhere else (a *-site.xml,
    a spark.hadoop.* setting, the code) names that place instead, and stays."""
    return [
        prop["key"]
        for prop in json.loads(dump)["properties"]
        if prop.get("resource") in UNUSED_LOCAL_DEFAULTS
    ]


def drop_unused_hadoop_defaults(spark: SparkSession) -> int:
    """Removes unused_hadoop_defaults from a local driver's Hadoop configurations (the
    SparkContext's, which the join broadcasts, and the sessions' shared copy, which the
    state stores use); returns how many. A cluster's driver keeps them all. Should Hadoop
    register another default file later, it reloads them: that costs the gain, no setting.
    """
    if not spark.sparkContext.master.startswith("local"):
        return 0
    jvm = spark.sparkContext._jvm
    dropped = 0
    for conf in (
        spark.sparkContext._jsc.hadoopConfiguration(),
        spark._jsparkSession.sharedState().hadoopConf(),
    ):
        dump = jvm.java.io.StringWriter()
        jvm.org.apache.hadoop.conf.Configuration.dumpConfiguration(conf, dump)
        for key in unused_hadoop_defaults(dump.toString()):
            conf.unset(key)
            dropped += 1
    return dropped


def build_session(settings: Settings, master: str | None = None) -> SparkSession:
    builder = SparkSession.builder.appName(APP_NAME)
    for key, value in session_conf(settings).items():
        builder = builder.config(key, value)
    if master:
        builder = builder.master(master)
    spark = builder.getOrCreate()
    spark.sparkContext.setLogLevel("WARN")
    drop_unused_hadoop_defaults(spark)
    return spark


# A copy, as in the customers, risk and score scripts: tests/unit/test_scripts_standalone.py keeps them equal.
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


# A copy, as in the score script: tests/unit/test_scripts_standalone.py keeps them equal.
def kafka_timeouts(settings: Settings) -> dict[str, str]:
    """STEDI_KAFKA_TIMEOUT_MS as a source's waits on the broker: the driver's offset
    lookups (the admin client refuses an API timeout below its request timeout, so
    both) and the executors' fetches. None when unset."""
    if not settings.kafka_timeout_ms:
        return {}
    return {
        "kafka.request.timeout.ms": settings.kafka_timeout_ms,
        "kafka.default.api.timeout.ms": settings.kafka_timeout_ms,
        "kafkaConsumer.pollTimeoutMs": settings.kafka_timeout_ms,
    }


# A copy, as in the score script: tests/unit/test_scripts_standalone.py keeps them equal.
def kafka_sink_timeouts(settings: Settings) -> dict[str, str]:
    """STEDI_KAFKA_TIMEOUT_MS as the sink's waits on the broker: for metadata, and for
    a send (which must cover linger.ms, 0 here, plus the request timeout). None when unset."""
    if not settings.kafka_timeout_ms:
        return {}
    return {
        "kafka.max.block.ms": settings.kafka_timeout_ms,
        "kafka.request.timeout.ms": settings.kafka_timeout_ms,
        "kafka.delivery.timeout.ms": settings.kafka_timeout_ms,
    }


# A copy, as in the score script: tests/unit/test_scripts_standalone.py keeps them equal.
def read_kafka(spark: SparkSession, topic: str, settings: Settings) -> DataFrame:
    """One input topic; `startingOffsets` applies to a first start only.

    One source per topic, not one over both: Spark reads a source once per
    branch of the plan, and each branch would read, then drop, the other topic.
    """
    return (
        spark.readStream.format("kafka")
        .option("kafka.bootstrap.servers", settings.bootstrap_servers)
        .option("subscribe", topic)
        .option("startingOffsets", starting_offsets_for(topic, settings.starting_offsets))
        .option("failOnDataLoss", "true")
        # Spark's cached consumer may hold a fetch the broker keeps open for want of new
        # data; the next batch waits for it. 500 ms by default, a floor under every batch.
        .option("kafka.fetch.max.wait.ms", "50")
        .options(**kafka_timeouts(settings))
        .load()
    )


def start(spark: SparkSession, settings: Settings, available_now: bool) -> StreamingQuery:
    writer = (
        pipeline(
            read_kafka(spark, settings.redis_topic, settings),
            read_kafka(spark, settings.events_topic, settings),
            settings,
        )
        .writeStream.queryName(QUERY_NAME)
        .format("kafka")
        .outputMode("append")
        .option("kafka.bootstrap.servers", settings.bootstrap_servers)
        # Send at once; no compression, which the app's kafka-python consumer may not
        # decode (lz4 needs an extra library); acks=all so a written batch is durable.
        .option("kafka.linger.ms", "0")
        .option("kafka.acks", "all")
        .options(**kafka_sink_timeouts(settings))
        .option("checkpointLocation", os.path.join(settings.checkpoint_dir, CHECKPOINT_NAME))
    )
    if available_now:
        return writer.trigger(availableNow=True).start()
    return writer.trigger(processingTime=settings.trigger_interval).start()


# The observations of checked_once, one per input.
CHECKS = ("customer_checks", "event_checks")


def progress_line(progress: dict) -> str:
    """`[<query>] batch <id>: <n> rows in, <r> rows/s, <ms> ms, <s> state rows, <d> dead letters`.

    The benchmark parses this line: keep its fields and their order. Rows in
    are Kafka records (each is read once, see checked_once).
    """
    rows = progress.get("numInputRows") or 0
    rate = progress.get("processedRowsPerSecond") or 0.0
    duration = (progress.get("durationMs") or {}).get("triggerExecution", 0)
    state_rows = sum(op.get("numRowsTotal", 0) for op in progress.get("stateOperators") or [])
    observed = progress.get("observedMetrics") or {}
    # A Row, or a dict from JSON; an observation is missing in a batch without its input.
    letters = sum(int(observed[name]["dead_letters"] or 0) for name in CHECKS if name in observed)
    return (
        f"[{progress.get('name')}] batch {progress.get('batchId')}: "
        f"{rows} rows in, {rate:.1f} rows/s, {duration} ms, "
        f"{state_rows} state rows, {letters} dead letters"
    )


# How often the driver looks for new progress: each look is a call into the JVM, so not
# more than once a second (four jobs polling 5 times a second took a quarter of a core).
# A copy, as in the customers, risk and score scripts: tests/unit/test_scripts_standalone.py keeps them equal.
PROGRESS_POLL_S = 1.0


# A copy, as in the customers and risk scripts: tests/unit/test_scripts_standalone.py keeps them equal.
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


# A copy, as in the customers and risk scripts: tests/unit/test_scripts_standalone.py keeps them equal.
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


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--available-now", action="store_true", help="process what is there, then exit"
    )
    args = parser.parse_args(argv)
    settings = Settings()
    if settings.state_store not in STATE_STORES:
        raise SystemExit(f"STEDI_STATE_STORE must be one of {', '.join(STATE_STORES)}")
    try:
        interval_ms(settings.risk_wait)
    except ValueError as error:
        raise SystemExit(f"STEDI_RISK_WAIT is {error}") from None
    spark = build_session(settings)
    try:
        run(spark, settings, args.available_now)
    finally:
        spark.stop()


if __name__ == "__main__":
    main(sys.argv[1:])
