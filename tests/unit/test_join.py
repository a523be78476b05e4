"""The join of risk scores with customers (sparkpykafkajoin.py)."""

import json
from datetime import datetime, timedelta

import pytest
from pyspark.testing import assertDataFrameEqual

from stedi.schemas import KAFKA_SOURCE_SCHEMA
from stedi.transforms import (
    customer_risk_records,
    customers_from_redis,
    join_risk_with_customers,
    risk_events,
)
from tests.records import customer, customer_record, kafka_rows, risk_record

T0 = datetime(2026, 1, 1, 12, 0)
SANTOSH = customer("Santosh Fibonnaci", "Santosh.Fibonnaci@test.com", "1963-01-01")


class StreamingJoin:
    """Runs the join over two file-source streams shaped like the Kafka source."""

    def __init__(self, spark, tmp_path, customer_ttl="7 days", risk_wait="1 hour"):
        self.spark = spark
        self.redis_dir = str(tmp_path / "redis-server")
        self.events_dir = str(tmp_path / "stedi-events")
        self.offsets = {"redis-server": 0, "stedi-events": 0}
        # File sources need an existing folder with the schema; start with empty batches.
        self.append("redis-server", [], T0)
        self.append("stedi-events", [], T0)
        joined = join_risk_with_customers(
            customers_from_redis(self._stream(self.redis_dir)),
            risk_events(self._stream(self.events_dir)),
            customer_ttl,
            risk_wait,
        )
        self.query = (
            customer_risk_records(joined)
            .writeStream.format("memory")
            .queryName("customer_risk_test")
            .outputMode("append")
            .option("checkpointLocation", str(tmp_path / "checkpoint"))
            .start()
        )

    def _stream(self, path):
        return self.spark.readStream.schema(KAFKA_SOURCE_SCHEMA).parquet(path)

    def append(self, topic, values, timestamp):
        path = self.redis_dir if topic == "redis-server" else self.events_dir
        rows = kafka_rows(topic, values, timestamp, self.offsets[topic])
        self.offsets[topic] += len(values)
        self.spark.createDataFrame(rows, KAFKA_SOURCE_SCHEMA).write.mode("append").parquet(path)

    def output(self):
        self.query.processAllAvailable()
        return [
            (r.key, json.loads(r.value)) for r in self.spark.table("customer_risk_test").collect()
        ]

    def stop(self):
        self.query.stop()


@pytest.fixture
def streaming_join(spark, tmp_path):
    join = StreamingJoin(spark, tmp_path)
    yield join
    join.stop()


def test_output_record_is_the_spec_json_keyed_by_email_without_phone_or_birth_date(
    spark, streaming_join
):
    streaming_join.append("redis-server", [customer_record(SANTOSH)], T0)
    streaming_join.append("stedi-events", [risk_record(SANTOSH["email"], 28.5)], T0)
    streaming_join.query.processAllAvailable()
    assertDataFrameEqual(
        spark.table("customer_risk_test"),
        spark.createDataFrame(
            [
                (
                    "Santosh.Fibonnaci@test.com",
                    '{"customer":"Santosh.Fibonnaci@test.com","score":28.5,'
                    '"email":"Santosh.Fibonnaci@test.com","birthYear":1963}',
                )
            ],
            "key string, value string",
        ),
    )
    [(_, value)] = streaming_join.output()
    assert isinstance(value["birthYear"], int)
    assert isinstance(value["score"], float)


def test_a_customer_written_twice_gives_one_output_per_risk_score(streaming_join):
    record = customer_record(SANTOSH)
    streaming_join.append("redis-server", [record, record], T0)
    streaming_join.output()
    streaming_join.append("redis-server", [record], T0 + timedelta(minutes=1))
    streaming_join.append(
        "stedi-events", [risk_record(SANTOSH["email"], 28.5)], T0 + timedelta(minutes=2)
    )
    streaming_join.output()
    streaming_join.append(
        "stedi-events", [risk_record(SANTOSH["email"], -1.0)], T0 + timedelta(minutes=3)
    )
    streaming_join.append("redis-server", [record], T0 + timedelta(minutes=3))
    assert sorted(score["score"] for _, score in streaming_join.output()) == [-1.0, 28.5]


def test_a_risk_score_arriving_before_its_customer_is_joined_when_the_customer_arrives(
    streaming_join,
):
    streaming_join.append("stedi-events", [risk_record(SANTOSH["email"], 4.5)], T0)
    assert streaming_join.output() == []
    streaming_join.append("redis-server", [customer_record(SANTOSH)], T0 + timedelta(minutes=10))
    assert streaming_join.output() == [
        (
            SANTOSH["email"],
            {
                "customer": SANTOSH["email"],
                "score": 4.5,
                "email": SANTOSH["email"],
                "birthYear": 1963,
            },
        )
    ]


def test_a_risk_score_older_than_the_wait_does_not_join_a_customer_that_arrives_later(
    streaming_join,
):
    streaming_join.append("stedi-events", [risk_record(SANTOSH["email"], 4.5)], T0)
    streaming_join.output()
    streaming_join.append("redis-server", [customer_record(SANTOSH)], T0 + timedelta(hours=2))
    assert streaming_join.output() == []


def test_bad_records_beside_good_ones_do_not_stop_the_stream(streaming_join):
    streaming_join.append("redis-server", ["garbage", None, customer_record(SANTOSH)], T0)
    streaming_join.append(
        "stedi-events", ["{{", '{"customer":1}', risk_record(SANTOSH["email"], 2.0)], T0
    )
    assert [v["score"] for _, v in streaming_join.output()] == [2.0]
    assert streaming_join.query.isActive


def test_progress_line_reports_rows_rate_duration_and_state_rows(streaming_join):
    from stedi.sparkjob import progress_line

    streaming_join.append("redis-server", [customer_record(SANTOSH)], T0)
    streaming_join.output()
    line = progress_line(streaming_join.query.lastProgress)
    assert line.startswith("[customer_risk_test] batch ")
    assert "1 rows in" in line and "rows/s" in line and " ms" in line
    assert line.endswith(" state rows") and ", 0 state rows" not in line
