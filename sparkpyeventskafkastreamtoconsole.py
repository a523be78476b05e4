"""Risk scores from the STEDI app, printed to the console.

Reads STEDI_EVENTS_TOPIC (default `stedi-events`: one JSON risk score per record, as the
STEDI app publishes them) and prints each score's customer, score and riskDate; malformed
records are counted (`bad_records`, in the wrappers' progress lines). Add --available-now
to process what the topic holds, then exit. `./submit-event.sh` runs it here.
Settings: docs/operations.md.

    spark-submit --packages org.apache.spark:spark-sql-kafka-0-10_2.13:4.2.0 sparkpyeventskafkastreamtoconsole.py
"""

import argparse
import json
import os

from pyspark.sql import Column, DataFrame, SparkSession
from pyspark.sql import functions as F
from pyspark.sql.streaming import StreamingQuery
from pyspark.sql.types import DoubleType, StringType, StructField, StructType

QUERY_NAME = "risk-events-console"

# --- wire formats (docs/formats.md) --------------------------------------------------------
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


def _is_email(text: Column) -> Column:
    return F.coalesce(text.rlike(r"^[^@\s]+@[^@\s]+\.[^@\s]+$"), F.lit(False))


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


def console_rows(records: DataFrame) -> DataFrame:
    """Good risk scores (customer, score, riskDate); bad ones are counted, not shown."""
    return (
        risk_events(records)
        .observe("event_checks", F.count_if(F.col("problem").isNotNull()).alias("bad_records"))
        .where(F.col("problem").isNull())
        .select("customer", "score", "riskDate")
    )


def start_query(spark: SparkSession, available_now: bool = False) -> StreamingQuery:
    env = os.environ.get
    topic = env("STEDI_EVENTS_TOPIC") or "stedi-events"
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
    spark = SparkSession.builder.appName("stedi-risk-events").getOrCreate()
    start_query(spark, args.available_now).awaitTermination()


if __name__ == "__main__":
    main()
