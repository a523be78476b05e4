"""Risk scores joined with customers' birth years, written to Kafka.

Reads customers from STEDI_REDIS_TOPIC (default `redis-server`, as the Redis source
publishes them) and risk scores from STEDI_EVENTS_TOPIC (default `stedi-events`),
inner-joins them on email and writes one record per assessment to KAFKA_RISK_TOPIC
(default `customer-risk`), keyed by email, with the score's riskDate in a header:

    {"customer":"Santosh.Fibonnaci@test.com","score":28.5,
     "email":"Santosh.Fibonnaci@test.com","birthYear":1963}

A score waits up to STEDI_RISK_WAIT (default `1 hour`) for its customer; a repeat of an
assessment within that wait gives no second record. Malformed records go to
STEDI_DEAD_LETTER_TOPIC (default `stedi-dead-letter`) from the same query.

    spark-submit --packages org.apache.spark:spark-sql-kafka-0-10_2.13:4.2.0 sparkpykafkajoin.py

Add --available-now to process what the topics hold, then exit; `./submit-join.sh` runs it here.
How the join works: docs/architecture.md; every setting: docs/operations.md.
"""

import argparse
import json
import os
import sys

from pyspark.sql import Column, DataFrame, SparkSession
from pyspark.sql import functions as F
from pyspark.sql.streaming import StreamingQuery
from pyspark.sql.types import ArrayType, DoubleType, StringType, StructField, StructType

QUERY_NAME = "customer-risk-join"
# Renamed when a change to the query's state makes older checkpoints unusable.
CHECKPOINT_NAME = "customer-risk-join-v2"

# --- wire formats (docs/formats.md) --------------------------------------------------------
# A record of `redis-server`: a ZADD carries `zSetEntries`, a SET carries `value`.
REDIS_RECORD_SCHEMA = StructType(
    [
        StructField("key", StringType()),
        StructField("zSetEntries", ArrayType(StructType([StructField("element", StringType())]))),
        StructField("value", StringType()),
    ]
)
CUSTOMER_SCHEMA = StructType(
    [StructField(n, StringType()) for n in ("customerName", "email", "birthDay")]
)
# A record of `stedi-events`; `score` may be an integer or a decimal JSON number.
RISK_EVENT_SCHEMA = StructType(
    [
        StructField("customer", StringType()),
        StructField("score", DoubleType()),
        StructField("riskDate", StringType()),
    ]
)
# ISO-8601 with a four-digit year: Spark's lenient parser alone takes "2020" as a time.
ISO_INSTANT_PATTERN = r"^\d{4}-\d\d-\d\dT\d\d:\d\d(:\d\d(\.\d{1,9})?)?(Z|[+-]\d\d:?\d\d)$"
RISK_DATE_FORMAT = "yyyy-MM-dd'T'HH:mm:ss.SSS'Z'"  # as the app writes it, in UTC


# --- decoding: pure DataFrame -> DataFrame ------------------------------------------------
def _is_email(text: Column) -> Column:
    return F.coalesce(text.rlike(r"^[^@\s]+@[^@\s]+\.[^@\s]+$"), F.lit(False))


def customer_members(records: DataFrame) -> DataFrame:
    """Each `Customer` member: record columns, member, email, customerName, birthYear, problem."""
    parsed = records.withColumn("text", F.try_validate_utf8(F.col("value").cast("string")))
    parsed = parsed.withColumn("record", F.from_json("text", REDIS_RECORD_SCHEMA))
    key = F.try_to_binary(F.col("record.key"), F.lit("base64"))  # Redis keys are bytes
    entries = F.col("record.zSetEntries")
    empty = entries.isNull() & F.col("record.value").isNull()  # neither a ZADD nor a SET
    record_problem = (
        F.when(F.col("value").isNull(), "value is missing")
        .when(F.col("text").isNull(), "value is not valid UTF-8")
        .when(F.col("record.key").isNull(), "value is not a Redis source record")
        .when(empty, "value is not a Redis source record")
        .when(key.isNull(), "key is not valid base64")
    )
    is_customer = (key == F.lit(b"Customer")) & entries.isNotNull()
    members = parsed.where(record_problem.isNotNull() | is_customer).select(
        *records.columns,
        record_problem.alias("recordProblem"),
        # A bad record is one problem, not one per member.
        F.posexplode_outer(F.when(record_problem.isNull(), entries)).alias("member", "entry"),
    )
    element = F.try_to_binary(F.col("entry.element"), F.lit("base64"))
    decoded = members.withColumn("json", F.try_validate_utf8(element.cast("string")))
    decoded = decoded.withColumn("customer", F.from_json("json", CUSTOMER_SCHEMA))
    email = F.col("customer.email")
    birth_day = F.try_to_date(F.col("customer.birthDay"), "yyyy-MM-dd")
    problem = F.coalesce(
        F.col("recordProblem"),
        F.when(F.col("entry").isNull(), "Customer ZADD without members")
        .when(element.isNull(), "member is not valid base64")
        .when(F.col("json").isNull(), "member is not valid UTF-8")
        .when(F.json_object_keys("json").isNull(), "member is not customer JSON")
        .when(~_is_email(email), "customer email is missing or not an email address")
        .when(birth_day.isNull(), "customer birthDay is missing or not yyyy-MM-dd")
        .when(birth_day > F.current_date(), "customer birthDay is in the future"),
    )
    return decoded.select(
        *records.columns,
        "member",
        email.alias("email"),
        F.col("customer.customerName").alias("customerName"),
        F.year(birth_day).alias("birthYear"),
        problem.alias("problem"),
    )


def risk_events(records: DataFrame) -> DataFrame:
    """Every record of `stedi-events`: its columns, customer, score, riskDate, `problem`."""
    parsed = records.withColumn("text", F.try_validate_utf8(F.col("value").cast("string")))
    parsed = parsed.withColumn("event", F.from_json("text", RISK_EVENT_SCHEMA))
    score, risk_date = F.col("event.score"), F.col("event.riskDate")
    risk_date = F.when(risk_date.rlike(ISO_INSTANT_PATTERN), F.try_to_timestamp(risk_date))
    problem = (
        F.when(F.col("value").isNull(), "value is missing")
        .when(F.col("text").isNull(), "value is not valid UTF-8")
        .when(F.json_object_keys("text").isNull(), "value is not a JSON object")
        .when(~_is_email(F.col("event.customer")), "customer is missing or not an email address")
        .when(score.isNull(), "score is missing or not a number")
        .when(F.isnan(score) | (F.abs(score) == float("inf")), "score is not a finite number")
        .when(risk_date.isNull(), "riskDate is missing or not an ISO-8601 time")
    )
    return parsed.select(
        *records.columns,
        F.col("event.customer").alias("customer"),
        score.alias("score"),
        risk_date.alias("riskDate"),
        problem.alias("problem"),
    )


# --- dead letters --------------------------------------------------------------------------
def dead_letter(member: Column | None = None) -> tuple[Column, Column]:
    """The dead-letter `key` and `value` of a row with a problem (nulls for a good row):
    its source, reason and value, cut to 64 KiB with its full length and SHA-256."""
    raw = F.coalesce(F.col("value"), F.lit(b""))
    bad = F.col("problem").isNotNull()
    value = F.to_json(
        F.struct(
            F.col("topic").alias("sourceTopic"),
            F.col("partition").alias("sourcePartition"),
            F.col("offset").alias("sourceOffset"),
            F.date_format("timestamp", "yyyy-MM-dd'T'HH:mm:ss.SSSXXX").alias("sourceTimestamp"),
            F.col("problem").alias("reason"),
            (F.lit(None).cast("int") if member is None else member).alias("member"),
            F.octet_length(raw).alias("valueBytes"),
            F.sha2(raw, 256).alias("valueSha256"),
            F.make_valid_utf8(F.substring(raw, 1, 64 * 1024).cast("string")).alias("value"),
        )
    )
    key = F.concat_ws("/", "topic", "partition", "offset")
    return F.when(bad, key).alias("letterKey"), F.when(bad, value).alias("letterValue")


def checked_once(rows: DataFrame, keys: list[str], name: str) -> DataFrame:
    """`rows` shuffled by `keys` once per micro-batch for both the join and the dead letters.

    The observation keeps the optimizer from splitting the shared shuffle in two: it
    pushes no filter through it, and the hash reads every column (a leading underscore
    keeps it out of the progress line). It also counts the dead letters.
    """
    return rows.repartition(*keys).observe(
        name,
        F.max(F.hash(*rows.columns)).alias("_checksum"),
        F.count_if(F.col("problem").isNotNull()).alias("dead_letters"),
    )


def checked_dead_letters(checked: DataFrame) -> DataFrame:
    return checked.where(F.col("problem").isNotNull()).select(
        F.col("letterKey").alias("key"), F.col("letterValue").alias("value")
    )


# --- the join ------------------------------------------------------------------------------
SCORE_KEY = ["customer", "score", "riskDate"]  # one assessment


def with_arrival_time(records: DataFrame) -> DataFrame:
    """Event time is the micro-batch's time, so no record is ever late for the watermark."""
    return records.withColumn("arrival", F.current_timestamp())


def checked_customers(records: DataFrame) -> DataFrame:
    members = customer_members(with_arrival_time(records)).withWatermark("arrival", "0 seconds")
    return checked_once(
        members.select("email", "birthYear", "arrival", "problem", *dead_letter(F.col("member"))),
        ["email"],
        "customer_checks",
    )


def checked_scores(records: DataFrame, wait_ms: int) -> DataFrame:
    """Scores with `waitMiddle` = arrival + wait/2 as event time, delayed by wait/2: the
    repeat filter and the join both keep a score for one wait after its arrival, and the
    watermark stays the latest arrival (docs/architecture.md)."""
    half = wait_ms // 2
    events = risk_events(with_arrival_time(records)).withColumn(
        "waitMiddle", F.col("arrival") + F.expr(f"INTERVAL {wait_ms - half} MILLISECONDS")
    )
    return checked_once(
        events.withWatermark("waitMiddle", f"{half} milliseconds").select(
            *SCORE_KEY, "waitMiddle", "problem", *dead_letter()
        ),
        SCORE_KEY,
        "event_checks",
    )


def unique_customers(checked: DataFrame) -> DataFrame:
    """Good customers, the first version of each email, kept for the checkpoint's life."""
    good = checked.where(F.col("problem").isNull())
    return good.select("email", "birthYear", "arrival").dropDuplicates(["email"])


def unique_scores(checked: DataFrame) -> DataFrame:
    """Good scores, each assessment once within its wait."""
    good = checked.where(F.col("problem").isNull())
    return good.select(*SCORE_KEY, "waitMiddle").dropDuplicatesWithinWatermark(SCORE_KEY)


def join_risk_with_customers(customers: DataFrame, risks: DataFrame, wait_ms: int) -> DataFrame:
    """Inner join on email; a score waits up to `wait_ms` after its arrival for its customer,
    and customers, with no lower time bound, are never evicted."""
    c, r = customers.alias("c"), risks.alias("r")
    condition = F.expr(
        f"r.customer = c.email AND c.arrival <= r.waitMiddle + INTERVAL {wait_ms // 2} MILLISECONDS"
    )
    return r.join(c, condition, "inner").select(
        "r.customer", "r.score", "c.email", "c.birthYear", "r.riskDate"
    )


def customer_risk_records(joined: DataFrame) -> DataFrame:
    """Kafka records: key email, the spec's JSON value, and a `riskDate` header that tells
    assessments with the same value apart."""
    risk_date = F.encode(F.date_format("riskDate", RISK_DATE_FORMAT), "UTF-8")
    return joined.select(
        F.col("email").alias("key"),
        F.to_json(F.struct("customer", "score", "email", "birthYear")).alias("value"),
        F.array(F.struct(F.lit("riskDate").alias("key"), risk_date.alias("value"))).alias(
            "headers"
        ),
    )


def customer_risk(
    customer_records: DataFrame,
    event_records: DataFrame,
    wait_ms: int,
    risk_topic: str = "customer-risk",
    dead_letter_topic: str = "stedi-dead-letter",
) -> DataFrame:
    """Kafka records of both topics -> (topic, key, value, headers): joined records and
    the dead letters of both inputs, for one Kafka sink."""
    customers = checked_customers(customer_records)
    scores = checked_scores(event_records, wait_ms)
    joined = join_risk_with_customers(unique_customers(customers), unique_scores(scores), wait_ms)
    letters = checked_dead_letters(customers).unionByName(checked_dead_letters(scores))
    return (
        customer_risk_records(joined)
        .withColumn("topic", F.lit(risk_topic))
        .unionByName(
            letters.withColumn("topic", F.lit(dead_letter_topic)), allowMissingColumns=True
        )
    )


# --- settings and the query ----------------------------------------------------------------
STATE_STORES = {
    "rocksdb": "org.apache.spark.sql.execution.streaming.state.RocksDBStateStoreProvider",
    "hdfs": "org.apache.spark.sql.execution.streaming.state.HDFSBackedStateStoreProvider",
}
# The query's watermark is the later input's, so scores leave the state while no customer
# arrives; no micro-batch runs only to evict state (both fixed in the checkpoint); UTC times.
QUERY_CONF = {
    "spark.sql.streaming.multipleWatermarkPolicy": "max",
    "spark.sql.streaming.noDataMicroBatches.enabled": "false",
    "spark.sql.session.timeZone": "UTC",
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
    checkpoint = os.path.join(env("STEDI_CHECKPOINT_DIR") or "build/checkpoints", CHECKPOINT_NAME)
    store = env("STEDI_STATE_STORE") or "rocksdb"
    if store not in STATE_STORES:  # exit status 2: a bad setting, not restarted
        print(f"STEDI_STATE_STORE must be one of {', '.join(STATE_STORES)}", file=sys.stderr)
        sys.exit(2)
    # Fixed in the checkpoint at its first start: one state store instance per partition.
    spark.conf.set("spark.sql.shuffle.partitions", env("STEDI_SHUFFLE_PARTITIONS") or "2")
    spark.conf.set("spark.sql.streaming.stateStore.providerClass", STATE_STORES[store])
    spark.conf.set("spark.sql.streaming.stateStore.rocksdb.changelogCheckpointing.enabled", "true")
    for key, value in QUERY_CONF.items():
        spark.conf.set(key, value)
    wait_ms = interval_ms(spark, env("STEDI_RISK_WAIT") or "1 hour", "STEDI_RISK_WAIT")
    # STEDI_KAFKA_TIMEOUT_MS bounds each wait on the broker: a longer outage fails the query.
    timeout = env("STEDI_KAFKA_TIMEOUT_MS")
    source_keys = ["kafka.request.timeout.ms", "kafka.default.api.timeout.ms"]
    source_waits = dict.fromkeys([*source_keys, "kafkaConsumer.pollTimeoutMs"], timeout)
    sink_keys = ["kafka.max.block.ms", "kafka.request.timeout.ms", "kafka.delivery.timeout.ms"]
    sink_waits = dict.fromkeys(sink_keys, timeout)

    # One source per topic: each branch of the plan reads only its own topic.
    customers, events = (
        spark.readStream.format("kafka")
        .option("kafka.bootstrap.servers", servers)
        .option("subscribe", topic)
        .option("startingOffsets", starting_offsets(topic))
        .option("failOnDataLoss", "true")
        .option("kafka.fetch.max.wait.ms", "50")  # a batch never waits on an idle fetch
        .options(**source_waits if timeout else {})
        .load()
        for topic in (
            env("STEDI_REDIS_TOPIC") or "redis-server",
            env("STEDI_EVENTS_TOPIC") or "stedi-events",
        )
    )
    records = customer_risk(
        customers,
        events,
        wait_ms,
        risk_topic=env("KAFKA_RISK_TOPIC") or "customer-risk",
        dead_letter_topic=env("STEDI_DEAD_LETTER_TOPIC") or "stedi-dead-letter",
    )
    writer = (
        records.writeStream.queryName(QUERY_NAME)
        .format("kafka")
        .option("kafka.bootstrap.servers", servers)
        # Sent at once, uncompressed (the app's consumer may lack lz4), durable once written.
        .option("kafka.linger.ms", "0")
        .option("kafka.acks", "all")
        .options(**sink_waits if timeout else {})
        .option("checkpointLocation", checkpoint)
    )
    if available_now:
        return writer.trigger(availableNow=True).start()
    return writer.trigger(processingTime=env("STEDI_TRIGGER_INTERVAL") or "0.5 seconds").start()


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--available-now", action="store_true", help="process what is there, then exit"
    )
    args = parser.parse_args()
    spark = SparkSession.builder.appName("stedi-customer-risk").getOrCreate()
    start_query(spark, args.available_now).awaitTermination()


if __name__ == "__main__":
    main()
