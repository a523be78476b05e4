"""Fall-risk scores computed in Spark from the raw rapid step tests, checked against the app's.

Reads STEDI_REDIS_TOPIC (default `redis-server`) and keeps the ZADDs to the
`RapidStepTest` sorted set; reads STEDI_EVENTS_TOPIC (default `stedi-events`)
for the scores the STEDI app published. Per customer (by email) it keeps the
four most recent tests by stop time and, from the fourth test on, computes the
score of docs/formats.md: mean duration of the two tests before minus mean of the
two most recent, in seconds, rounded HALF_UP to 2 decimals, never -0.0;
`riskDate` is the stop time of the most recent test. It writes, from one query:

- STEDI_SPARK_RISK_TOPIC (default `stedi-risk-spark`): one record per score in
  the exact `stedi-events` format (key: publish time in epoch ms), so the join
  can read it instead by setting STEDI_EVENTS_TOPIC:
      {"customer":"Jason.Mitra@test.com","score":7.0,"riskDate":"2020-09-14T07:54:06.417Z"}
- STEDI_RISK_QUALITY_TOPIC (default `risk-quality`): one record per Spark score,
  matched with the app's score of the same customer and riskDate (key: email):
      {"customer":"Jason.Mitra@test.com","riskDate":"2020-09-14T07:54:06.417Z",
       "sparkScore":7.0,"appScore":7.0,"agree":true}
  A score still unmatched at the end of a micro-batch behind 8 newer waiting
  scores of that customer, or when the customer's state expires, is written
  without `appScore`, agree false.
- STEDI_DEAD_LETTER_TOPIC (default `stedi-dead-letter`): malformed step tests
  (source topic, partition, offset, timestamp, reason, member index, the value
  cut to 64 KiB with its length and SHA-256).

Tests arriving out of order are ordered by stop time; an exact repeat of a test
already held gives no second score, nor does a late test older than the four
held. A customer not tested for STEDI_SCORE_STATE_TTL (default `400 days`,
processing time) is forgotten. The state function is Python (pandas and pyarrow
at run time, as applyInPandasWithState needs); everything else is built-in
column functions.

This file is all a cluster needs (plus pandas and pyarrow on the executors):

    spark-submit --packages org.apache.spark:spark-sql-kafka-0-10_2.13:4.2.0 sparkpyriskscore.py

Options: --available-now (process what is there, then exit). Settings are
environment variables: KAFKA_BOOTSTRAP_SERVERS, STEDI_REDIS_TOPIC,
STEDI_EVENTS_TOPIC, STEDI_SPARK_RISK_TOPIC, STEDI_RISK_QUALITY_TOPIC,
STEDI_DEAD_LETTER_TOPIC, STEDI_CHECKPOINT_DIR, STEDI_STARTING_OFFSETS,
STEDI_SCORE_STATE_TTL, STEDI_SHUFFLE_PARTITIONS, STEDI_TRIGGER_INTERVAL,
STEDI_STATE_STORE, STEDI_KAFKA_TIMEOUT_MS. In this repository the wrapper adds the
connector and the master:

    ./submit-score.sh                  # run until Ctrl-C
    ./submit-score.sh --available-now  # process what is there, then exit
"""

from __future__ import annotations

import argparse
import bisect
import json
import os
import re
import sys
import time
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field

from pyspark.sql import Column, DataFrame, SparkSession
from pyspark.sql import functions as F
from pyspark.sql.streaming import StreamingQuery
from pyspark.sql.streaming.state import GroupState, GroupStateTimeout
from pyspark.sql.types import (
    ArrayType,
    BooleanType,
    DoubleType,
    IntegerType,
    LongType,
    StringType,
    StructField,
    StructType,
    TimestampType,
)

APP_NAME = "stedi-risk-score"
QUERY_NAME = "risk-score"
MIN_TESTS = 4  # a score needs four tests; state keeps no more
PENDING_LIMIT = 8  # unmatched scores kept per customer and side for the check


# A copy, as in the customers, risk and join scripts: tests/unit/test_scripts_standalone.py keeps them equal.
def _env(name: str, default: str) -> str:
    return os.environ.get(name, "").strip() or default


def duration_ms(text: str) -> int:
    """`400 days`, `12 hours`, `30 minutes`, `10 seconds`, `500 ms` -> milliseconds."""
    units = {"ms": 1, "s": 1000, "m": 60_000, "h": 3_600_000, "d": 86_400_000}
    match = re.fullmatch(
        r"\s*(\d+)\s*(ms|milliseconds?|s|seconds?|m|minutes?|h|hours?|d|days?)\s*", text
    )
    if not match:
        raise ValueError(f"not a duration (like '400 days'): {text!r}")
    unit = match.group(2)
    key = "ms" if unit.startswith("mil") or unit == "ms" else unit[0]
    return int(match.group(1)) * units[key]


@dataclass(frozen=True)
class Settings:
    """This job's environment variables (the same names locally and in Docker)."""

    bootstrap_servers: str = field(
        default_factory=lambda: _env("KAFKA_BOOTSTRAP_SERVERS", "localhost:9092")
    )
    redis_topic: str = field(default_factory=lambda: _env("STEDI_REDIS_TOPIC", "redis-server"))
    events_topic: str = field(default_factory=lambda: _env("STEDI_EVENTS_TOPIC", "stedi-events"))
    spark_risk_topic: str = field(
        default_factory=lambda: _env("STEDI_SPARK_RISK_TOPIC", "stedi-risk-spark")
    )
    quality_topic: str = field(
        default_factory=lambda: _env("STEDI_RISK_QUALITY_TOPIC", "risk-quality")
    )
    dead_letter_topic: str = field(
        default_factory=lambda: _env("STEDI_DEAD_LETTER_TOPIC", "stedi-dead-letter")
    )
    checkpoint_dir: str = field(
        default_factory=lambda: _env("STEDI_CHECKPOINT_DIR", os.path.abspath("build/checkpoints"))
    )
    starting_offsets: str = field(
        default_factory=lambda: _env("STEDI_STARTING_OFFSETS", "earliest")
    )
    # A customer not tested for this long (processing time) leaves the state.
    state_ttl: str = field(default_factory=lambda: _env("STEDI_SCORE_STATE_TTL", "400 days"))
    # Each shuffle partition is one instance of the state store: few is faster here.
    shuffle_partitions: str = field(default_factory=lambda: _env("STEDI_SHUFFLE_PARTITIONS", "2"))
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
# A copy, as in the customers and join scripts: tests/unit/test_scripts_standalone.py keeps them equal.
ZSET_ENTRY_SCHEMA = StructType(
    [StructField("element", StringType()), StructField("score", DoubleType())]
)
# A copy, as in the customers and join scripts: tests/unit/test_scripts_standalone.py keeps them equal.
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
# A member of the `RapidStepTest` sorted set, as the app stores it (times in epoch ms).
STEP_TEST_SCHEMA = StructType(
    [
        StructField("startTime", LongType()),
        StructField("stopTime", LongType()),
        StructField("testTime", LongType()),
        StructField("totalSteps", IntegerType()),
        StructField(
            "customer",
            StructType(
                [
                    StructField("customerName", StringType()),
                    StructField("email", StringType()),
                    StructField("phone", StringType()),
                    StructField("birthDay", StringType()),
                ]
            ),
        ),
    ]
)
# A record of `stedi-events`; `score` may be an integer or a decimal JSON number.
# A copy, as in the risk and join scripts: tests/unit/test_scripts_standalone.py keeps them equal.
RISK_EVENT_SCHEMA = StructType(
    [
        StructField("customer", StringType()),
        StructField("score", DoubleType()),
        StructField("riskDate", StringType()),
    ]
)

# --- the state function's input, output and state ------------------------------------------
# One row per good test (`stopTime`, `testTime`) or app score (`riskDateMs`, `appScore`).
SCORE_INPUT_SCHEMA = StructType(
    [
        StructField("customer", StringType()),
        StructField("isTest", BooleanType()),
        StructField("stopTime", LongType()),
        StructField("testTime", LongType()),
        StructField("riskDateMs", LongType()),
        StructField("appScore", DoubleType()),
        StructField("topic", StringType()),
        StructField("partition", IntegerType()),
        StructField("offset", LongType()),
        StructField("arrival", TimestampType()),
    ]
)
# `score`: a Spark score; `check`: a Spark score with the app's (null: never matched);
# `pad`: a filler row, dropped (see score_customer).
# A score is carried as the two duration sums (ms); Spark rounds it, not Python.
SCORE_OUTPUT_SCHEMA = StructType(
    [
        StructField("customer", StringType()),
        StructField("kind", StringType()),
        StructField("riskDateMs", LongType()),
        StructField("previousTwoMs", LongType()),
        StructField("recentTwoMs", LongType()),
        StructField("appScore", DoubleType()),
    ]
)
# Per customer, as compact JSON of CustomerState: the tests held (at most 4), Spark
# scores waiting for the app's, app scores waiting for Spark's, when last tested.
# (JSON because applyInPandasWithState's state accepts no array fields.)
SCORE_STATE_SCHEMA = StructType([StructField("json", StringType())])

RAPID_STEP_TEST_KEY = bytearray(b"RapidStepTest")
# A copy, as in the customers, risk and join scripts: tests/unit/test_scripts_standalone.py keeps them equal.
EMAIL_PATTERN = r"^[^@\s]+@[^@\s]+\.[^@\s]+$"
# A copy, as in the join script: tests/unit/test_scripts_standalone.py keeps them equal.
DEAD_LETTER_VALUE_BYTES = 64 * 1024
# A copy, as in the join script: tests/unit/test_scripts_standalone.py keeps them equal.
RISK_DATE_FORMAT = "yyyy-MM-dd'T'HH:mm:ss.SSS'Z'"


# --- decoding: pure DataFrame -> DataFrame, built-in functions only -------------------------
# A copy, as in the customers, risk and join scripts: tests/unit/test_scripts_standalone.py keeps them equal.
def _text(binary: Column) -> Column:
    """Bytes as text; null when they are not valid UTF-8."""
    return F.try_validate_utf8(binary.cast("string"))


# A copy, as in the customers, risk and join scripts: tests/unit/test_scripts_standalone.py keeps them equal.
def _is_email(text: Column) -> Column:
    return F.coalesce(text.rlike(EMAIL_PATTERN), F.lit(False))


def step_test_members(records: DataFrame) -> DataFrame:
    """One row per member written to the `RapidStepTest` sorted set of `redis-server`.

    Columns: those of `records`, `member` (index in its ZADD), customer (email),
    stopTime, testTime and `problem` (null for a good test). Other keys, SET
    commands and values that are no connector record are dropped: the join's
    dead letters report the latter, and they are no step tests.
    """
    parsed = records.withColumn("record", F.from_json(_text(F.col("value")), REDIS_RECORD_SCHEMA))
    key = F.try_to_binary(F.col("record.key"), F.lit("base64"))
    zadds = parsed.where(
        (key == F.lit(RAPID_STEP_TEST_KEY)) & F.col("record.zSetEntries").isNotNull()
    )
    members = zadds.select(
        "*", F.posexplode_outer("record.zSetEntries").alias("member", "entry")
    ).withColumn("json", _text(F.try_to_binary(F.col("entry.element"), F.lit("base64"))))
    test = F.from_json("json", STEP_TEST_SCHEMA)
    members = members.withColumn("test", test)
    problem = (
        F.when(F.col("entry").isNull(), "RapidStepTest ZADD without members")
        .when(F.col("json").isNull(), "member is not valid base64 of UTF-8 text")
        .when(F.json_object_keys("json").isNull(), "member is not a JSON object")
        .when(~_is_email(F.col("test.customer.email")), "step test has no customer email")
        .when(F.col("test.stopTime").isNull(), "step test has no integer stopTime")
        .when(
            F.coalesce(F.col("test.testTime"), F.lit(0)) <= 0,
            "step test has no positive integer testTime",
        )
    )
    return members.select(
        *records.columns,
        "member",
        F.col("test.customer.email").alias("customer"),
        F.col("test.stopTime").alias("stopTime"),
        F.col("test.testTime").alias("testTime"),
        problem.alias("problem"),
    )


def app_scores(records: DataFrame) -> DataFrame:
    """The app's scores of `stedi-events`: customer, riskDateMs, appScore.

    Records that are no valid score are dropped (the join dead-letters them).
    """
    event = F.from_json(_text(F.col("value")), RISK_EVENT_SCHEMA)
    parsed = records.withColumn("event", event)
    risk_date_ms = F.unix_millis(F.try_to_timestamp(F.col("event.riskDate")))
    score = F.col("event.score")
    finite = ~F.isnan(score) & (F.abs(score) != F.lit(float("inf")))
    return parsed.select(
        *records.columns,
        F.col("event.customer").alias("customer"),
        risk_date_ms.alias("riskDateMs"),
        score.alias("appScore"),
    ).where(F.col("customer").isNotNull() & F.col("riskDateMs").isNotNull() & finite)


def score_input(tests: DataFrame, scores: DataFrame) -> DataFrame:
    """Good tests and the app's scores as one stream of SCORE_INPUT_SCHEMA rows."""
    good_tests = tests.where(F.col("problem").isNull()).select(
        "customer",
        F.lit(True).alias("isTest"),
        "stopTime",
        "testTime",
        F.lit(None).cast("long").alias("riskDateMs"),
        F.lit(None).cast("double").alias("appScore"),
        "topic",
        "partition",
        "offset",
        "arrival",
    )
    app = scores.select(
        "customer",
        F.lit(False).alias("isTest"),
        F.lit(None).cast("long").alias("stopTime"),
        F.lit(None).cast("long").alias("testTime"),
        "riskDateMs",
        "appScore",
        "topic",
        "partition",
        "offset",
        "arrival",
    )
    return good_tests.unionByName(app)


# --- the state: plain Python, one customer at a time ---------------------------------------
@dataclass
class CustomerState:
    """What is kept per customer; a row of SCORE_STATE_SCHEMA."""

    stops: list[int] = field(default_factory=list)
    durations: list[int] = field(default_factory=list)
    spark_dates: list[int] = field(default_factory=list)
    spark_previous: list[int] = field(default_factory=list)
    spark_recent: list[int] = field(default_factory=list)
    app_dates: list[int] = field(default_factory=list)
    app_scores: list[float] = field(default_factory=list)
    tested_at_ms: int = 0

    @classmethod
    def from_row(cls, row: tuple) -> CustomerState:
        return cls(**json.loads(row[0]))

    def to_row(self) -> tuple:
        return (json.dumps(asdict(self), separators=(",", ":")),)

    def add_test(self, stop_ms: int, duration_ms: int) -> tuple[int, int, int] | None:
        """Holds a test; the new score (riskDateMs, previousTwoMs, recentTwoMs) or None.

        Tests are kept sorted by stop time, the four most recent only. None when
        there are fewer than four, when the same test is held already (a replay),
        or when the test is older than the four held (the score is unchanged).
        """
        at = bisect.bisect_left(self.stops, stop_ms)
        if at < len(self.stops) and self.stops[at] == stop_ms and self.durations[at] == duration_ms:
            return None
        self.stops.insert(at, stop_ms)
        self.durations.insert(at, duration_ms)
        if len(self.stops) > MIN_TESTS:
            del self.stops[0], self.durations[0]
            if at == 0:
                return None  # the late test fell out at once
        if len(self.stops) < MIN_TESTS:
            return None
        a, b, c, d = self.durations
        return self.stops[-1], a + b, c + d

    def add_spark_score(self, risk_date_ms: int, previous: int, recent: int) -> list[tuple]:
        """Check rows (riskDateMs, previous, recent, appScore) settled by a new Spark score."""
        if risk_date_ms in self.app_dates:
            i = self.app_dates.index(risk_date_ms)
            app_score = self.app_scores.pop(i)
            del self.app_dates[i]
            return [(risk_date_ms, previous, recent, app_score)]
        self.spark_dates.append(risk_date_ms)
        self.spark_previous.append(previous)
        self.spark_recent.append(recent)
        return []

    def add_app_score(self, risk_date_ms: int, score: float) -> list[tuple]:
        """Check rows settled by an app score: the Spark score of that riskDate, if any yet."""
        if risk_date_ms in self.spark_dates:
            return [self._pop_spark(self.spark_dates.index(risk_date_ms), score)]
        self.app_dates.append(risk_date_ms)
        self.app_scores.append(score)
        return []

    def trim(self) -> list[tuple]:
        """Keeps the PENDING_LIMIT most recent waiting scores of each side (end of a batch).

        An older Spark score is checked without the app's value: the app never
        published it. An older app score is dropped: Spark will not compute it.
        """
        excess = max(0, len(self.app_dates) - PENDING_LIMIT)
        del self.app_dates[:excess], self.app_scores[:excess]
        excess = max(0, len(self.spark_dates) - PENDING_LIMIT)
        return [self._pop_spark(0, None) for _ in range(excess)]

    def unmatched(self) -> list[tuple]:
        """Check rows for every Spark score still waiting (the state is going away)."""
        return [self._pop_spark(0, None) for _ in list(self.spark_dates)]

    def _pop_spark(self, i: int, app_score: float | None) -> tuple:
        return (
            self.spark_dates.pop(i),
            self.spark_previous.pop(i),
            self.spark_recent.pop(i),
            app_score,
        )


def advance(state: CustomerState, rows: list[dict], now_ms: int) -> list[tuple]:
    """Applies one micro-batch of a customer's rows: the app's scores, then the tests.

    Tests in arrival order (their stop times order the state). App scores first,
    and waiting scores trimmed only at the end, so that a batch holding a long
    history of both (a replay) matches every pair whatever their order.
    Returns output rows (kind, riskDateMs, previousTwoMs, recentTwoMs, appScore).
    """
    out: list[tuple] = []
    ordered = sorted(rows, key=lambda r: (bool(r["isTest"]), r["partition"], r["offset"]))
    for row in ordered:
        if row["isTest"]:
            state.tested_at_ms = now_ms
            score = state.add_test(int(row["stopTime"]), int(row["testTime"]))
            if score is None:
                continue
            out.append(("score", *score, None))
            out.extend(("check", *c) for c in state.add_spark_score(*score))
        else:
            checks = state.add_app_score(int(row["riskDateMs"]), float(row["appScore"]))
            out.extend(("check", *c) for c in checks)
    out.extend(("check", *c) for c in state.trim())
    return out


def make_state_function(ttl_ms: int):
    """The applyInPandasWithState function: one customer's batch -> score and check rows."""

    def score_customer(key: tuple, batches: Iterator, state: GroupState) -> Iterator:
        import pandas as pd  # the Python worker's runtime, as applyInPandasWithState needs

        (customer,) = key
        now_ms = state.getCurrentProcessingTimeMs()
        if state.hasTimedOut:
            held = CustomerState.from_row(state.get)
            state.remove()
            out = [("check", *c) for c in held.unmatched()]
        else:
            held = CustomerState.from_row(state.get) if state.exists else CustomerState()
            if not held.tested_at_ms:
                held.tested_at_ms = now_ms  # a customer seen only through app scores so far
            rows = [r for batch in batches for r in batch.to_dict("records")]
            out = advance(held, rows, now_ms)
            state.update(held.to_row())
            # Event time is the batch time (`arrival`), so this expires with processing time.
            expiry = max(held.tested_at_ms + ttl_ms, state.getCurrentWatermarkMs() + 1)
            state.setTimeoutTimestamp(expiry)
        if out:
            # pyspark 4.2.0 loses the first output row of the first group a Python worker
            # returns (tests/unit/test_risk_score_spark.py pins it): lead with a `pad` row,
            # which `with_scores` drops.
            out.insert(0, ("pad", 0, 0, 0, None))
            yield pd.DataFrame(
                {
                    "customer": [customer] * len(out),
                    "kind": [o[0] for o in out],
                    "riskDateMs": pd.array([o[1] for o in out], dtype="int64"),
                    "previousTwoMs": pd.array([o[2] for o in out], dtype="int64"),
                    "recentTwoMs": pd.array([o[3] for o in out], dtype="int64"),
                    "appScore": pd.array([o[4] for o in out], dtype="Float64"),
                }
            )

    return score_customer


def scored(inputs: DataFrame, ttl_ms: int) -> DataFrame:
    """SCORE_INPUT_SCHEMA rows -> SCORE_OUTPUT_SCHEMA rows, with state per customer.

    The TTL is an event-time timeout on `arrival`, the batch time: a watermark of
    batch times never makes a row late, and, unlike a processing-time timeout,
    lets an --available-now run end (Spark runs no-data batches for those forever).
    """
    return (
        inputs.withWatermark("arrival", "0 seconds")
        .groupBy("customer")
        .applyInPandasWithState(
            make_state_function(ttl_ms),
            SCORE_OUTPUT_SCHEMA,
            SCORE_STATE_SCHEMA,
            "append",
            GroupStateTimeout.EventTimeTimeout,
        )
    )


# --- scores and records: pure DataFrame -> DataFrame, built-in functions only ---------------
def with_scores(rows: DataFrame) -> DataFrame:
    """Adds `score` (seconds, HALF_UP to 2 decimals, never -0.0) and `riskDate` text.

    (a+b)/2 - (c+d)/2 ms = (a+b-c-d)/2000 s, in decimal arithmetic: exact before
    the one rounding, as the app's Decimal. A decimal has no negative zero.
    """
    exact = (F.col("previousTwoMs") - F.col("recentTwoMs")).cast("decimal(20,0)") / F.lit(2000)
    score = F.round(exact, 2).cast("double")
    utc = F.to_utc_timestamp(F.timestamp_millis("riskDateMs"), F.current_timezone())
    return (
        rows.where(F.col("kind") != "pad")
        .withColumn("score", F.when(score == 0, F.lit(0.0)).otherwise(score))
        .withColumn("riskDate", F.date_format(utc, RISK_DATE_FORMAT))
    )


def score_records(rows: DataFrame, spark_risk_topic: str, quality_topic: str) -> DataFrame:
    """The state's rows as Kafka records (topic, key, value), one select for both kinds.

    A `score` row goes to `spark_risk_topic` in the `stedi-events` format: key =
    publish time in epoch ms, value {"customer","score","riskDate"}. A `check` row
    goes to `quality_topic`, keyed by email, with both scores and `agree`
    (`appScore` absent when the app never published it). One select, not two
    filters, so the stateful operator above runs once per batch.
    """
    is_score = F.col("kind") == "score"
    agree = F.coalesce(F.col("score") == F.col("appScore"), F.lit(False))
    check = F.struct(
        "customer",
        "riskDate",
        F.col("score").alias("sparkScore"),
        "appScore",
        agree.alias("agree"),
    )
    return rows.select(
        F.when(is_score, F.lit(spark_risk_topic)).otherwise(F.lit(quality_topic)).alias("topic"),
        F.when(is_score, F.unix_millis(F.current_timestamp()).cast("string"))
        .otherwise(F.col("customer"))
        .alias("key"),
        F.when(is_score, F.to_json(F.struct("customer", "score", "riskDate")))
        .otherwise(F.to_json(check))
        .alias("value"),
    )


def dead_letters(rows: DataFrame) -> DataFrame:
    """Rows with a problem as dead-letter records (`key`, `value`), each well under 1 MiB.

    The raw value is cut to 64 KiB (as UTF-8 text, invalid bytes replaced); its
    full length and SHA-256 tell the original apart.
    """
    raw = F.coalesce(F.col("value"), F.lit(b""))
    return rows.where(F.col("problem").isNotNull()).select(
        F.concat_ws("/", "topic", "partition", "offset").alias("key"),
        F.to_json(
            F.struct(
                F.col("topic").alias("sourceTopic"),
                F.col("partition").alias("sourcePartition"),
                F.col("offset").alias("sourceOffset"),
                F.date_format("timestamp", "yyyy-MM-dd'T'HH:mm:ss.SSSXXX").alias("sourceTimestamp"),
                F.col("problem").alias("reason"),
                F.col("member").alias("member"),
                F.octet_length(raw).alias("valueBytes"),
                F.sha2(raw, 256).alias("valueSha256"),
                F.make_valid_utf8(
                    F.substring(raw, 1, DEAD_LETTER_VALUE_BYTES).cast("string")
                ).alias("value"),
            )
        ).alias("value"),
    )


def pipeline(test_records: DataFrame, event_records: DataFrame, settings: Settings) -> DataFrame:
    """Kafka records of `redis-server` and `stedi-events` -> (topic, key, value) rows for
    one Kafka sink.

    Observed per batch as `risk_score`: scores, checks, agreeing checks, dead letters.
    """
    tests = step_test_members(test_records.withColumn("arrival", F.current_timestamp()))
    app = app_scores(event_records.withColumn("arrival", F.current_timestamp()))
    rows = with_scores(scored(score_input(tests, app), duration_ms(settings.state_ttl)))
    out = score_records(rows, settings.spark_risk_topic, settings.quality_topic).unionByName(
        dead_letters(tests).withColumn("topic", F.lit(settings.dead_letter_topic))
    )
    return out.observe(
        "risk_score",
        F.count_if(F.col("topic") == settings.spark_risk_topic).alias("scores"),
        F.count_if(F.col("topic") == settings.quality_topic).alias("checks"),
        F.count_if(
            (F.col("topic") == settings.quality_topic)
            & (F.get_json_object("value", "$.agree") == "true")
        ).alias("agreeing"),
        F.count_if(
            (F.col("topic") == settings.quality_topic)
            & F.get_json_object("value", "$.appScore").isNull()
        ).alias("unmatched"),
        F.count_if(F.col("topic") == settings.dead_letter_topic).alias("dead_letters"),
    )


# --- I/O -----------------------------------------------------------------------------------
# A copy, as in the join script: tests/unit/test_scripts_standalone.py keeps them equal.
STATE_STORES = {
    "rocksdb": "org.apache.spark.sql.execution.streaming.state.RocksDBStateStoreProvider",
    "hdfs": "org.apache.spark.sql.execution.streaming.state.HDFSBackedStateStoreProvider",
}


# Checkpoint files through Hadoop's FileSystem API, not its FileContext API (Spark's
# default): without Hadoop's native library, FileContext forks `chmod`, `stat` and
# `readlink` for each file it writes, 60 processes per micro-batch of a small stateful
# query here, against 12. Both rename a finished file into place.
# A copy, as in the customers, risk and join scripts: tests/unit/test_scripts_standalone.py keeps them equal.
CHECKPOINT_FILE_MANAGER = (
    "org.apache.spark.sql.execution.streaming.checkpointing.FileSystemBasedCheckpointFileManager"
)


def session_conf(settings: Settings) -> dict[str, str]:
    """Few shuffle partitions (each is a state store instance), UTC, the chosen state
    store: the SQL settings of this job's session (one engine may run several)."""
    return {
        "spark.sql.shuffle.partitions": settings.shuffle_partitions,
        "spark.sql.streaming.stateStore.providerClass": STATE_STORES[settings.state_store],
        "spark.sql.streaming.stateStore.rocksdb.changelogCheckpointing.enabled": "true",
        "spark.sql.session.timeZone": "UTC",
        "spark.sql.streaming.checkpointFileManagerClass": CHECKPOINT_FILE_MANAGER,
    }


def build_session(settings: Settings, master: str | None = None) -> SparkSession:
    builder = SparkSession.builder.appName(APP_NAME)
    for key, value in session_conf(settings).items():
        builder = builder.config(key, value)
    if master:
        builder = builder.master(master)
    spark = builder.getOrCreate()
    spark.sparkContext.setLogLevel("WARN")
    return spark


# A copy, as in the customers, risk and join scripts: tests/unit/test_scripts_standalone.py keeps them equal.
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


# A copy, as in the join script: tests/unit/test_scripts_standalone.py keeps them equal.
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


# A copy, as in the join script: tests/unit/test_scripts_standalone.py keeps them equal.
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


# A copy, as in the join script: tests/unit/test_scripts_standalone.py keeps them equal.
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
        .option("kafka.linger.ms", "0")
        .option("kafka.acks", "all")
        .options(**kafka_sink_timeouts(settings))
        .option("checkpointLocation", os.path.join(settings.checkpoint_dir, QUERY_NAME))
    )
    if available_now:
        return writer.trigger(availableNow=True).start()
    return writer.trigger(processingTime=settings.trigger_interval).start()


@dataclass
class Agreement:
    """Checks, agreeing checks and checks without the app's score since this run started."""

    checks: int = 0
    agreeing: int = 0
    unmatched: int = 0


def progress_line(progress: dict, agreement: Agreement) -> str:
    """`[<query>] batch <id>: <n> rows in, <r> rows/s, <ms> ms, <s> state rows, <d> dead
    letters, <k> scores, agreement <p>% of <m>, <u> without an app score` (since this
    run started; a score the app never published counts as not agreeing, and as <u>).
    """
    rate = progress.get("processedRowsPerSecond") or 0.0
    duration = (progress.get("durationMs") or {}).get("triggerExecution", 0)
    state_rows = sum(op.get("numRowsTotal", 0) for op in progress.get("stateOperators") or [])
    observed = (progress.get("observedMetrics") or {}).get("risk_score")
    counts = {
        name: (0 if observed is None else int(observed[name] or 0))
        for name in ("scores", "checks", "agreeing", "unmatched", "dead_letters")
    }
    agreement.checks += counts["checks"]
    agreement.agreeing += counts["agreeing"]
    agreement.unmatched += counts["unmatched"]
    percent = 100.0 * agreement.agreeing / agreement.checks if agreement.checks else 0.0
    return (
        f"[{progress.get('name')}] batch {progress.get('batchId')}: "
        f"{progress.get('numInputRows', 0)} rows in, {rate:.1f} rows/s, {duration} ms, "
        f"{state_rows} state rows, {counts['dead_letters']} dead letters, "
        f"{counts['scores']} scores, agreement {percent:.1f}% of {agreement.checks}, "
        f"{agreement.unmatched} without an app score"
    )


# How often the driver looks for new progress: each look is a call into the JVM, so not
# more than once a second (four jobs polling 5 times a second took a quarter of a core).
# A copy, as in the customers, risk and join scripts: tests/unit/test_scripts_standalone.py keeps them equal.
PROGRESS_POLL_S = 1.0


def print_new_batches(query: StreamingQuery, last: int, agreement: Agreement) -> int:
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
        print(progress_line(progress, agreement), flush=True)
    return max(p["batchId"] for p in news)


def run(spark: SparkSession, settings: Settings, available_now: bool) -> None:
    """Runs the query, printing one progress line per batch.

    A failed query restarts from its checkpoint after a back-off of 1 s doubling
    to 60 s; an --available-now run fails instead.
    """
    backoff = 1.0
    agreement = Agreement()
    while True:
        query = start(spark, settings, available_now)
        print(f"[{query.name}] started (id {query.id})", flush=True)
        last = -1
        try:
            while query.isActive:
                query.awaitTermination(PROGRESS_POLL_S)
                if (newest := print_new_batches(query, last, agreement)) > last:
                    last, backoff = newest, 1.0
            print_new_batches(query, last, agreement)  # batches that ended in between
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
        backoff = min(backoff * 2, 60.0)


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
        duration_ms(settings.state_ttl)
    except ValueError as error:
        raise SystemExit(f"STEDI_SCORE_STATE_TTL: {error}") from None
    spark = build_session(settings)
    try:
        run(spark, settings, args.available_now)
    finally:
        spark.stop()


if __name__ == "__main__":
    main(sys.argv[1:])
