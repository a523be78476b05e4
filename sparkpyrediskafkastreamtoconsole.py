"""Customers from Redis, printed to the console.

Reads STEDI_REDIS_TOPIC (default `redis-server`: each Redis write, from the Redis source)
and prints the email, name and birth year of each member written to the `Customer`
sorted set; malformed records are counted (`bad_records`, in the wrappers' progress
lines). Add --available-now to process what the topic holds, then exit;
`./submit-redis.sh` runs it here. Settings: docs/operations.md.

    spark-submit --packages org.apache.spark:spark-sql-kafka-0-10_2.13:4.2.0 sparkpyrediskafkastreamtoconsole.py
"""

import argparse
import json
import os

from pyspark.sql import Column, DataFrame, SparkSession
from pyspark.sql import functions as F
from pyspark.sql.streaming import StreamingQuery
from pyspark.sql.types import ArrayType, StringType, StructField, StructType

QUERY_NAME = "redis-customers-console"

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


def console_rows(records: DataFrame) -> DataFrame:
    """Good customers (email, customerName, birthYear); bad ones are counted, not shown."""
    return (
        customer_members(records)
        .observe("customer_checks", F.count_if(F.col("problem").isNotNull()).alias("bad_records"))
        .where(F.col("problem").isNull())
        .select("email", "customerName", "birthYear")
    )


def start_query(spark: SparkSession, available_now: bool = False) -> StreamingQuery:
    env = os.environ.get
    topic = env("STEDI_REDIS_TOPIC") or "redis-server"
    checkpoint = os.path.join(env("STEDI_CHECKPOINT_DIR") or "build/checkpoints", QUERY_NAME)
    offsets = env("STEDI_STARTING_OFFSETS") or "earliest"
    if offsets.startswith("{"):  # Spark's JSON of offsets per topic: this topic's, or earliest
        named = json.loads(offsets)
        offsets = json.dumps({topic: named[topic]}) if topic in named else "earliest"
    spark.conf.set("spark.sql.session.timeZone", "UTC")

    records = (
        spark.readStream.format("kafka")
        .option("kafka.bootstrap.servers", env("KAFKA_BOOTSTRAP_SERVERS") or "localhost:9092")
        .option("subscribe", topic)
        .option("startingOffsets", offsets)
        .load()
    )
    writer = (
        console_rows(records)
        .writeStream.queryName(QUERY_NAME)
        .format("console")
        .option("truncate", "false")
        .option("numRows", "1000")
        .option("checkpointLocation", checkpoint)
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
    spark = SparkSession.builder.appName("stedi-redis-customers").getOrCreate()
    start_query(spark, args.available_now).awaitTermination()


if __name__ == "__main__":
    main()
