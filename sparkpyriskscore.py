"""Fall-risk scores computed in Spark from the raw rapid step tests, checked against the app's.

Reads the `RapidStepTest` ZADDs of STEDI_REDIS_TOPIC (default `redis-server`) and the app's
scores of STEDI_EVENTS_TOPIC (default `stedi-events`). Per customer it keeps the four most
recent tests by stop time and, from the fourth on, computes the score of docs/formats.md.
From one query it writes:
- to STEDI_SPARK_RISK_TOPIC (default `stedi-risk-spark`), each score in the `stedi-events`
  format: {"customer":"Jason.Mitra@test.com","score":7.0,"riskDate":"2020-09-14T07:54:06.417Z"}
- to STEDI_RISK_QUALITY_TOPIC (default `risk-quality`), each score checked against the
  app's: {"customer":...,"riskDate":...,"sparkScore":7.0,"appScore":7.0,"agree":true}
- to STEDI_DEAD_LETTER_TOPIC (default `stedi-dead-letter`), malformed step tests.
A customer not tested for STEDI_SCORE_STATE_TTL (default `400 days`) is forgotten. The state
function is Python (pandas and pyarrow on the executors). Add --available-now to process
what the topics hold, then exit; `./submit-score.sh` runs it here. Settings:
docs/operations.md; the check: docs/architecture.md.

    spark-submit --packages org.apache.spark:spark-sql-kafka-0-10_2.13:4.2.0 sparkpyriskscore.py
"""

import argparse
import bisect
import json
import os
import sys
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field

from pyspark.sql import Column, DataFrame, SparkSession
from pyspark.sql import functions as F
from pyspark.sql.streaming import StreamingQuery
from pyspark.sql.streaming.state import GroupState, GroupStateTimeout
from pyspark.sql.types import (
    ArrayType,
    DoubleType,
    LongType,
    StringType,
    StructField,
    StructType,
)

QUERY_NAME = "risk-score"
MIN_TESTS = 4  # a score needs four tests; state keeps no more
PENDING_LIMIT = 8  # unmatched scores kept per customer and side for the check

# --- wire formats (docs/formats.md) --------------------------------------------------------
# The `RapidStepTest` ZADDs of `redis-server` carry the tests as base64 members.
ZADD_SCHEMA = StructType(
    [
        StructField("key", StringType()),
        StructField("zSetEntries", ArrayType(StructType([StructField("element", StringType())]))),
    ]
)
# A member of `RapidStepTest`, as the app stores it (times in epoch ms).
STEP_TEST_SCHEMA = StructType(
    [
        StructField("stopTime", LongType()),
        StructField("testTime", LongType()),
        StructField("customer", StructType([StructField("email", StringType())])),
    ]
)
# A record of `stedi-events`; `score` may be an integer or a decimal JSON number.
RISK_EVENT_SCHEMA = StructType(
    [
        StructField("customer", StringType()),
        StructField("score", DoubleType()),
        StructField("riskDate", StringType()),
    ]
)

# --- the state function's input, output and state ------------------------------------------
# One row per good test (`stopTime`, `testTime`) or app score (`riskDateMs`, `appScore`).
INPUT_COLUMNS = ["customer", "isTest", "stopTime", "testTime", "riskDateMs", "appScore"]
INPUT_COLUMNS += ["topic", "partition", "offset", "arrival"]
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
# The frame's column types: pandas would infer floats and objects.
OUTPUT_TYPES = dict.fromkeys(["riskDateMs", "previousTwoMs", "recentTwoMs"], "int64")
OUTPUT_TYPES["appScore"] = "Float64"


# --- decoding: pure DataFrame -> DataFrame ------------------------------------------------
def _is_email(text: Column) -> Column:
    return F.coalesce(text.rlike(r"^[^@\s]+@[^@\s]+\.[^@\s]+$"), F.lit(False))


def step_test_members(records: DataFrame) -> DataFrame:
    """Members written to the `RapidStepTest` sorted set: the record's columns, `member`,
    customer (email), stopTime, testTime and `problem` (null if good; other records dropped)."""
    parsed = records.withColumn(
        "record", F.from_json(F.try_validate_utf8(F.col("value").cast("string")), ZADD_SCHEMA)
    )
    key = F.try_to_binary(F.col("record.key"), F.lit("base64"))
    zadds = parsed.where((key == F.lit(b"RapidStepTest")) & F.col("record.zSetEntries").isNotNull())
    members = zadds.select("*", F.posexplode_outer("record.zSetEntries").alias("member", "entry"))
    element = F.try_to_binary(F.col("entry.element"), F.lit("base64"))
    members = members.withColumn("json", F.try_validate_utf8(element.cast("string")))
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
    """The app's valid scores of `stedi-events`: customer, riskDateMs, appScore (the join
    dead-letters the others)."""
    event = F.from_json(F.try_validate_utf8(F.col("value").cast("string")), RISK_EVENT_SCHEMA)
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
    """Good tests and the app's scores as one stream of INPUT_COLUMNS."""
    good_tests = tests.where(F.col("problem").isNull()).withColumn("isTest", F.lit(True))
    app = scores.withColumn("isTest", F.lit(False))
    both = good_tests.unionByName(app, allowMissingColumns=True)  # nulls for the other's
    return both.select(*INPUT_COLUMNS)


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
    def from_row(cls, row: tuple) -> "CustomerState":
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
        """Keeps the PENDING_LIMIT most recent waiting scores of each side: an older Spark
        score is checked without the app's, an older app score dropped (end of a batch)."""
        excess = max(0, len(self.app_dates) - PENDING_LIMIT)
        del self.app_dates[:excess], self.app_scores[:excess]
        excess = max(0, len(self.spark_dates) - PENDING_LIMIT)
        return [self._pop_spark(0, None) for _ in range(excess)]

    def unmatched(self) -> list[tuple]:
        """Check rows for every Spark score still waiting (the state is going away)."""
        return [self._pop_spark(0, None) for _ in list(self.spark_dates)]

    def _pop_spark(self, i: int, app_score: float | None) -> tuple:
        popped = (self.spark_dates.pop(i), self.spark_previous.pop(i), self.spark_recent.pop(i))
        return (*popped, app_score)


def advance(state: CustomerState, rows: list[dict], now_ms: int) -> list[tuple]:
    """One micro-batch of a customer's rows -> output rows (kind, riskDateMs, previousTwoMs,
    recentTwoMs, appScore). App scores first and trimming last, so a replayed history
    matches every pair whatever its order; tests in arrival order."""
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
            frame = pd.DataFrame(out, columns=SCORE_OUTPUT_SCHEMA.fieldNames()[1:])
            yield frame.assign(customer=customer).astype(OUTPUT_TYPES)

    return score_customer


def scored(inputs: DataFrame, ttl_ms: int) -> DataFrame:
    """INPUT_COLUMNS rows -> SCORE_OUTPUT_SCHEMA rows, with state per customer. The TTL
    is an event-time timeout on the batch time: unlike a processing-time one, it lets an
    --available-now run end."""
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


# --- records: pure DataFrame -> DataFrame -------------------------------------------------
def with_scores(rows: DataFrame) -> DataFrame:
    """Adds `score` (seconds, HALF_UP to 2 decimals, never -0.0) and `riskDate`, both as the
    app writes them: (a+b-c-d)/2000 in decimal arithmetic, exact before the one rounding."""
    exact = (F.col("previousTwoMs") - F.col("recentTwoMs")).cast("decimal(20,0)") / F.lit(2000)
    score = F.round(exact, 2).cast("double")
    utc = F.to_utc_timestamp(F.timestamp_millis("riskDateMs"), F.current_timezone())
    return (
        rows.where(F.col("kind") != "pad")
        .withColumn("score", F.when(score == 0, F.lit(0.0)).otherwise(score))
        .withColumn("riskDate", F.date_format(utc, "yyyy-MM-dd'T'HH:mm:ss.SSS'Z'"))
    )


def score_records(rows: DataFrame, spark_risk_topic: str, quality_topic: str) -> DataFrame:
    """`score` rows in the `stedi-events` format (key: publish time in ms), `check` rows
    keyed by email with both scores: one select, so the stateful operator runs once."""
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
    """Rows with a problem as dead-letter records (`key`, `value`): the raw value cut to
    64 KiB (invalid UTF-8 replaced), with its full length and SHA-256."""
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
                F.make_valid_utf8(F.substring(raw, 1, 64 * 1024).cast("string")).alias("value"),
            )
        ).alias("value"),
    )


def risk_score(
    test_records: DataFrame,
    event_records: DataFrame,
    ttl_ms: int,
    spark_risk_topic: str = "stedi-risk-spark",
    quality_topic: str = "risk-quality",
    dead_letter_topic: str = "stedi-dead-letter",
) -> DataFrame:
    """Kafka records of both topics -> (topic, key, value) rows for one Kafka sink, observed
    per batch as `risk_score` (the progress line's scores, checks and dead letters)."""
    tests = step_test_members(test_records.withColumn("arrival", F.current_timestamp()))
    app = app_scores(event_records.withColumn("arrival", F.current_timestamp()))
    rows = with_scores(scored(score_input(tests, app), ttl_ms))
    out = score_records(rows, spark_risk_topic, quality_topic).unionByName(
        dead_letters(tests).withColumn("topic", F.lit(dead_letter_topic))
    )
    quality = F.col("topic") == quality_topic
    return out.observe(
        "risk_score",
        F.count_if(F.col("topic") == spark_risk_topic).alias("scores"),
        F.count_if(quality).alias("checks"),
        F.count_if(quality & (F.get_json_object("value", "$.agree") == "true")).alias("agreeing"),
        F.count_if(quality & F.get_json_object("value", "$.appScore").isNull()).alias(
            "without_app_score"
        ),
        F.count_if(F.col("topic") == dead_letter_topic).alias("dead_letters"),
    )


# --- settings and the query ----------------------------------------------------------------
STATE_STORES = {
    "rocksdb": "org.apache.spark.sql.execution.streaming.state.RocksDBStateStoreProvider",
    "hdfs": "org.apache.spark.sql.execution.streaming.state.HDFSBackedStateStoreProvider",
}


def interval_ms(spark: SparkSession, text: str, variable: str) -> int:
    """A Spark interval string such as `1 hour 30 minutes` (from `variable`) in ms."""
    query = "SELECT unix_millis(TIMESTAMP'1970-01-01 00:00:00Z' + try_cast(:text AS INTERVAL))"
    ms = spark.sql(query, args={"text": text}).first()[0]
    if ms is None or ms <= 0:
        print(f"{variable} is not an interval such as '1 hour': {text!r}", file=sys.stderr)
        sys.exit(2)  # a bad setting: the wrappers restart no driver that exits with 2
    return ms


def starting_offsets(topic: str) -> str:
    """STEDI_STARTING_OFFSETS for `topic`: earliest, latest, or its part of Spark's JSON."""
    spec = os.environ.get("STEDI_STARTING_OFFSETS") or "earliest"
    if not spec.startswith("{"):
        return spec
    try:
        offsets = {p: int(o) for p, o in json.loads(spec).get(topic, {}).items()}
    except (ValueError, AttributeError, TypeError):
        print(f"STEDI_STARTING_OFFSETS is not Spark's JSON of offsets: {spec}", file=sys.stderr)
        sys.exit(2)
    return json.dumps({topic: offsets}) if offsets else "earliest"


def start_query(spark: SparkSession, available_now: bool = False) -> StreamingQuery:
    env = os.environ.get
    servers = env("KAFKA_BOOTSTRAP_SERVERS") or "localhost:9092"
    checkpoint_dir = env("STEDI_CHECKPOINT_DIR") or "build/checkpoints"
    store = env("STEDI_STATE_STORE") or "rocksdb"
    if store not in STATE_STORES:  # exit status 2: a bad setting, not restarted
        print(f"STEDI_STATE_STORE must be one of {', '.join(STATE_STORES)}", file=sys.stderr)
        sys.exit(2)
    # Fixed in the checkpoint at its first start: one state store instance per partition.
    spark.conf.set("spark.sql.shuffle.partitions", env("STEDI_SHUFFLE_PARTITIONS") or "2")
    spark.conf.set("spark.sql.streaming.stateStore.providerClass", STATE_STORES[store])
    spark.conf.set("spark.sql.streaming.stateStore.rocksdb.changelogCheckpointing.enabled", "true")
    spark.conf.set("spark.sql.session.timeZone", "UTC")
    ttl_ms = interval_ms(spark, env("STEDI_SCORE_STATE_TTL") or "400 days", "STEDI_SCORE_STATE_TTL")
    # STEDI_KAFKA_TIMEOUT_MS bounds each wait on the broker: a longer outage fails the query.
    timeout = env("STEDI_KAFKA_TIMEOUT_MS")
    source_keys = ["kafka.request.timeout.ms", "kafka.default.api.timeout.ms"]
    source_waits = dict.fromkeys([*source_keys, "kafkaConsumer.pollTimeoutMs"], timeout)
    sink_keys = ["kafka.max.block.ms", "kafka.request.timeout.ms", "kafka.delivery.timeout.ms"]
    sink_waits = dict.fromkeys(sink_keys, timeout)

    tests, events = (
        spark.readStream.format("kafka")
        .option("kafka.bootstrap.servers", servers)
        .option("subscribe", topic)
        .option("startingOffsets", starting_offsets(topic))
        .option("failOnDataLoss", "true")
        .options(**source_waits if timeout else {})
        .load()
        for topic in (
            env("STEDI_REDIS_TOPIC") or "redis-server",
            env("STEDI_EVENTS_TOPIC") or "stedi-events",
        )
    )
    records = risk_score(
        tests,
        events,
        ttl_ms,
        spark_risk_topic=env("STEDI_SPARK_RISK_TOPIC") or "stedi-risk-spark",
        quality_topic=env("STEDI_RISK_QUALITY_TOPIC") or "risk-quality",
        dead_letter_topic=env("STEDI_DEAD_LETTER_TOPIC") or "stedi-dead-letter",
    )
    writer = (
        records.writeStream.queryName(QUERY_NAME)
        .format("kafka")
        .option("kafka.bootstrap.servers", servers)
        .option("kafka.linger.ms", "0")
        .option("kafka.acks", "all")
        .options(**sink_waits if timeout else {})
        .option("checkpointLocation", os.path.join(checkpoint_dir, QUERY_NAME))
    )
    if available_now:
        return writer.trigger(availableNow=True).start()
    return writer.trigger(processingTime=env("STEDI_TRIGGER_INTERVAL") or "10 seconds").start()


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--available-now", action="store_true", help="process what is there, then exit"
    )
    args = parser.parse_args()
    spark = SparkSession.builder.appName("stedi-risk-score").getOrCreate()
    start_query(spark, args.available_now).awaitTermination()


if __name__ == "__main__":
    main()
