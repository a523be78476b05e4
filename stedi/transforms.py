"""Pure DataFrame -> DataFrame transformations of the three Spark jobs.

Every function takes DataFrames shaped like Spark's Kafka source (binary
`key`/`value`, `topic`, `partition`, `offset`, `timestamp`) or like the output
of another function here, and works the same on a static or a streaming
DataFrame. Built-in column functions only: no Python UDFs, so executors run
JVM code only. Malformed input becomes null and is filtered or routed to the
dead letters; it never raises, so it can never stop a stream.
"""

from __future__ import annotations

from pyspark.sql import Column, DataFrame
from pyspark.sql import functions as F

from stedi.schemas import CUSTOMER_SCHEMA, REDIS_RECORD_SCHEMA, RISK_EVENT_SCHEMA

CUSTOMER_KEY = "Customer"


def _base64_text(col: Column) -> Column:
    """Base64 (standard alphabet, padding optional) to UTF-8 text; null when invalid."""
    return F.try_to_binary(col, F.lit("base64")).cast("string")


def _is_json_object(text: Column) -> Column:
    """True when the text is a JSON object; from_json alone gives all-null fields."""
    return F.json_object_keys(text).isNotNull()


def _source_columns() -> list[Column]:
    return [
        F.col("timestamp").alias("eventTime"),
        F.col("topic"),
        F.col("partition"),
        F.col("offset"),
        F.col("value").cast("string").alias("rawValue"),
    ]


def redis_customer_members(kafka: DataFrame) -> DataFrame:
    """One row per sorted-set member written to the `Customer` key, with a `problem`.

    Records for other keys (User, RapidStepTest, ...) and other commands (SET,
    also to `Customer`) are not customers and are dropped here. A record whose value is not a
    connector record at all is kept with its problem so it can be dead-lettered.
    """
    records = kafka.select(
        *_source_columns(),
        F.from_json(F.col("value").cast("string"), REDIS_RECORD_SCHEMA).alias("record"),
    ).withColumn("redisKey", _base64_text(F.col("record.key")))
    # ZADDs to `Customer`, and values that are no connector record at all (dead letters).
    # A SET to `Customer` has no zSetEntries: another command, ignored like other keys.
    customer_zadd = (F.col("redisKey") == CUSTOMER_KEY) & F.col("record.zSetEntries").isNotNull()
    relevant = records.where(customer_zadd | F.col("record.key").isNull())
    members = relevant.select(
        "eventTime",
        "topic",
        "partition",
        "offset",
        "rawValue",
        "record",
        F.explode_outer("record.zSetEntries").alias("entry"),
    )
    decoded = members.withColumn("memberJson", _base64_text(F.col("entry.element"))).withColumn(
        "customer", F.from_json(F.col("memberJson"), CUSTOMER_SCHEMA)
    )
    birth_year = F.year(F.try_to_timestamp(F.col("customer.birthDay"), F.lit("yyyy-MM-dd")))
    problem = (
        F.when(F.col("record.key").isNull(), F.lit("value is not a Redis source record"))
        .when(F.col("entry").isNull(), F.lit("Customer ZADD without members"))
        .when(F.col("memberJson").isNull(), F.lit("member is not valid base64"))
        .when(~_is_json_object(F.col("memberJson")), F.lit("member is not customer JSON"))
        .when(F.col("customer.email").isNull(), F.lit("customer has no email"))
        .when(birth_year.isNull(), F.lit("customer birthDay is missing or not yyyy-MM-dd"))
    )
    return decoded.select(
        "eventTime",
        "topic",
        "partition",
        "offset",
        "rawValue",
        F.col("customer.email").alias("email"),
        F.col("customer.customerName").alias("customerName"),
        birth_year.cast("int").alias("birthYear"),
        problem.alias("problem"),
    )


def customers_from_redis(kafka: DataFrame) -> DataFrame:
    """Customers (email, customerName, birthYear, eventTime) from topic `redis-server`."""
    return (
        redis_customer_members(kafka)
        .where(F.col("problem").isNull())
        .select("email", "customerName", "birthYear", "eventTime")
    )


def risk_events_with_problems(kafka: DataFrame) -> DataFrame:
    """Every record of topic `stedi-events`, parsed, with a `problem` (null when good)."""
    parsed = kafka.select(
        *_source_columns(),
        F.from_json(F.col("value").cast("string"), RISK_EVENT_SCHEMA).alias("event"),
    )
    risk_date = F.try_to_timestamp(F.col("event.riskDate"))
    problem = (
        F.when(~_is_json_object(F.col("rawValue")), F.lit("value is not a JSON object"))
        .when(F.col("event.customer").isNull(), F.lit("risk event has no customer"))
        .when(F.col("event.score").isNull(), F.lit("risk event has no numeric score"))
    )
    return parsed.select(
        "eventTime",
        "topic",
        "partition",
        "offset",
        "rawValue",
        F.col("event.customer").alias("customer"),
        F.col("event.score").alias("score"),
        risk_date.alias("riskDate"),
        problem.alias("problem"),
    )


def risk_events(kafka: DataFrame) -> DataFrame:
    """Risk scores (customer, score, riskDate, eventTime) from topic `stedi-events`."""
    return (
        risk_events_with_problems(kafka)
        .where(F.col("problem").isNull())
        .select("customer", "score", "riskDate", "eventTime")
    )


def dead_letters(problems: DataFrame) -> DataFrame:
    """Rows with a problem, as Kafka records for the dead-letter topic (key: source)."""
    return problems.where(F.col("problem").isNotNull()).select(
        F.concat_ws("/", "topic", "partition", "offset").alias("key"),
        F.to_json(
            F.struct(
                F.col("topic").alias("sourceTopic"),
                F.col("partition").alias("sourcePartition"),
                F.col("offset").alias("sourceOffset"),
                F.col("problem").alias("problem"),
                F.col("rawValue").alias("value"),
            )
        ).alias("value"),
    )


def join_risk_with_customers(
    customers: DataFrame, risks: DataFrame, customer_ttl: str, risk_wait: str
) -> DataFrame:
    """Inner join of risk scores to customers on email, with bounded state.

    - A customer stays joinable for `customer_ttl` after it was written; a
      re-write of the same email within that time is dropped, so a risk score
      gives one output however often its customer was written.
    - A risk score waits up to `risk_wait` for a customer that has not arrived.
    Both are Spark interval strings ("7 days", "1 hour"); event time is the
    Kafka record timestamp of each side.
    """
    unique_customers = (
        customers.withWatermark("eventTime", customer_ttl)
        .dropDuplicatesWithinWatermark(["email"])
        .alias("c")
    )
    timed_risks = risks.withWatermark("eventTime", risk_wait).alias("r")
    condition = F.expr(
        "r.customer = c.email"
        f" AND r.eventTime >= c.eventTime - INTERVAL '{risk_wait}'"
        f" AND r.eventTime <= c.eventTime + INTERVAL '{customer_ttl}'"
    )
    return timed_risks.join(unique_customers, condition, "inner").select(
        F.col("r.customer").alias("customer"),
        F.col("r.score").alias("score"),
        F.col("c.email").alias("email"),
        F.col("c.birthYear").alias("birthYear"),
    )


def customer_risk_records(joined: DataFrame) -> DataFrame:
    """Output-topic records: key = email, value = the spec's JSON (no phone, no birth date)."""
    return joined.select(
        F.col("email").alias("key"),
        F.to_json(F.struct("customer", "score", "email", "birthYear")).alias("value"),
    )
