"""The benchmark's peer: the join written the common course way, to measure the project against.

It follows the approach most course solutions take, on purpose, with its traits:
temp views and `spark.sql`; the first ZADD member only; every field a string;
an inner stream-stream join without watermarks (state grows forever); the output
as `to_json(struct(*))`; Spark's default 200 shuffle partitions and state store.

Reads STEDI_REDIS_TOPIC and STEDI_EVENTS_TOPIC from KAFKA_BOOTSTRAP_SERVERS and
writes KAFKA_RISK_TOPIC (the bench gives it its own topic). Its progress lines come
from the driver's listener, as the project's jobs' do, so the bench times both the
same way; it keeps Spark's own code generation and checkpoint files, which the
project's drivers change (it shares their JVM, class archive and drivers' jar).

Submit it like the project's join (`bin/submit` adds the connector and --master):

    bin/submit bench/peer_join.py --available-now
"""

import argparse
import os

from pyspark.sql import SparkSession
from pyspark.sql.functions import col, from_json, split, unbase64
from pyspark.sql.types import ArrayType, StringType, StructField, StructType

QUERY_NAME = "peer-join"
# Spark's own checkpoint file manager (conf/spark-defaults.conf sets another).
FILE_CONTEXT_MANAGER = (
    "org.apache.spark.sql.execution.streaming.checkpointing.FileContextBasedCheckpointFileManager"
)

# The course's schemas: strings everywhere.
REDIS_MESSAGE_SCHEMA = StructType(
    [
        StructField("key", StringType()),
        StructField("existType", StringType()),
        StructField("ch", StringType()),
        StructField("incr", StringType()),
        StructField(
            "zSetEntries",
            ArrayType(
                StructType(
                    [StructField("element", StringType()), StructField("score", StringType())]
                )
            ),
        ),
    ]
)
CUSTOMER_SCHEMA = StructType(
    [
        StructField("customerName", StringType()),
        StructField("email", StringType()),
        StructField("phone", StringType()),
        StructField("birthDay", StringType()),
    ]
)
RISK_SCHEMA = StructType(
    [
        StructField("customer", StringType()),
        StructField("score", StringType()),
        StructField("riskDate", StringType()),
    ]
)


def read_kafka(spark, topic):
    return (
        spark.readStream.format("kafka")
        .option(
            "kafka.bootstrap.servers", os.environ.get("KAFKA_BOOTSTRAP_SERVERS", "localhost:9092")
        )
        .option("subscribe", topic)
        .option("startingOffsets", os.environ.get("STEDI_STARTING_OFFSETS", "earliest"))
        .load()
    )


def main():
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--available-now", action="store_true")
    args = parser.parse_args()

    # Spark's default, as in the course; the bench's tiny test run sets fewer
    # (BENCH_PEER_SHUFFLE_PARTITIONS), since 800 state store instances for 300 records only
    # make `make test` longer.
    partitions = os.environ.get("BENCH_PEER_SHUFFLE_PARTITIONS", "200")
    spark = (
        SparkSession.builder.appName("stedi-peer-join")
        .config("spark.sql.shuffle.partitions", partitions)
        .config("spark.sql.codegen.wholeStage", "true")
        .config("spark.sql.codegen.factoryMode", "FALLBACK")
        .config("spark.sql.streaming.checkpointFileManagerClass", FILE_CONTEXT_MANAGER)
        .getOrCreate()
    )
    spark.sparkContext.setLogLevel("WARN")

    redis_raw = read_kafka(spark, os.environ.get("STEDI_REDIS_TOPIC", "redis-server"))
    (
        redis_raw.selectExpr("cast(value as string) value")
        .withColumn("value", from_json("value", REDIS_MESSAGE_SCHEMA))
        .select(col("value.*"))
        .createOrReplaceTempView("RedisSortedSet")
    )
    encoded = spark.sql("select key, zSetEntries[0].element as encodedCustomer from RedisSortedSet")
    (
        encoded.withColumn("customer", unbase64(col("encodedCustomer")).cast("string"))
        .withColumn("customer", from_json("customer", CUSTOMER_SCHEMA))
        .select(col("customer.*"))
        .createOrReplaceTempView("CustomerRecords")
    )
    email_and_birth_day = spark.sql(
        "select email, birthDay from CustomerRecords"
        " where email is not null and birthDay is not null"
    )
    email_and_birth_year = email_and_birth_day.select(
        "email", split(col("birthDay"), "-").getItem(0).alias("birthYear")
    )

    events_raw = read_kafka(spark, os.environ.get("STEDI_EVENTS_TOPIC", "stedi-events"))
    (
        events_raw.selectExpr("cast(value as string) value")
        .withColumn("value", from_json("value", RISK_SCHEMA))
        .select(col("value.*"))
        .createOrReplaceTempView("CustomerRisk")
    )
    customer_risk = spark.sql("select customer, score from CustomerRisk")

    joined = customer_risk.join(
        email_and_birth_year, customer_risk.customer == email_and_birth_year.email
    )
    checkpoint_dir = os.environ.get("STEDI_CHECKPOINT_DIR", "/tmp/peer-join-checkpoints")
    writer = (
        joined.selectExpr("cast(customer as string) as key", "to_json(struct(*)) as value")
        .writeStream.queryName(QUERY_NAME)
        .format("kafka")
        .option(
            "kafka.bootstrap.servers", os.environ.get("KAFKA_BOOTSTRAP_SERVERS", "localhost:9092")
        )
        .option("topic", os.environ.get("KAFKA_RISK_TOPIC", "peer-customer-risk"))
        .option("checkpointLocation", os.path.join(checkpoint_dir, QUERY_NAME))
    )
    if args.available_now:
        writer = writer.trigger(availableNow=True)
    query = writer.start()

    try:
        query.awaitTermination()
    finally:
        spark.stop()


if __name__ == "__main__":
    main()
