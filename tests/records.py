"""Builders of wire-format records (docs/formats.md) and Kafka-shaped DataFrames for tests."""

from __future__ import annotations

import base64
import json
from datetime import datetime

from pyspark.sql.types import (
    BinaryType,
    IntegerType,
    LongType,
    StringType,
    StructField,
    StructType,
    TimestampType,
)

# The columns Spark's Kafka source gives every record (the subset the jobs use).
KAFKA_SOURCE_SCHEMA = StructType(
    [
        StructField("key", BinaryType()),
        StructField("value", BinaryType()),
        StructField("topic", StringType()),
        StructField("partition", IntegerType()),
        StructField("offset", LongType()),
        StructField("timestamp", TimestampType()),
    ]
)

SAM_TEST = {
    "customerName": "Sam Test",
    "email": "sam.test@test.com",
    "phone": "8015551212",
    "birthDay": "2001-01-03",
}


def b64(text: str, padded: bool = True) -> str:
    encoded = base64.b64encode(text.encode("utf-8")).decode("ascii")
    return encoded if padded else encoded.rstrip("=")


def customer(name: str, email: str, birth_day: str) -> dict:
    return {"customerName": name, "email": email, "phone": "8015551212", "birthDay": birth_day}


def zadd_record(key: str, *members: str, padded: bool = True) -> str:
    """A ZADD as the Redis source publishes it: both array names, lowercase flags."""
    entries = [{"element": b64(m, padded), "score": 0.0} for m in members]
    return json.dumps(
        {
            "key": b64(key, padded),
            "existType": "NONE",
            "ch": False,
            "incr": False,
            "zSetEntries": entries,
            "zsetEntries": entries,
        }
    )


def customer_record(*customers: dict, padded: bool = True) -> str:
    return zadd_record("Customer", *(json.dumps(c) for c in customers), padded=padded)


def step_test_json(who: dict, stop_ms: int, duration_ms: int) -> str:
    """A `RapidStepTest` member as the app stores it (times in epoch ms)."""
    return json.dumps(
        {
            "startTime": stop_ms - duration_ms,
            "stopTime": stop_ms,
            "testTime": duration_ms,
            "totalSteps": 30,
            "customer": who,
        }
    )


def step_test_record(who: dict, stop_ms: int, duration_ms: int) -> str:
    """One test as the Redis source publishes the app's single-member ZADD."""
    return zadd_record("RapidStepTest", step_test_json(who, stop_ms, duration_ms))


def set_record(key: str, value: str) -> str:
    return json.dumps(
        {
            "key": b64(key),
            "value": b64(value),
            "expiredType": "NONE",
            "expiredValue": None,
            "existType": "NONE",
        }
    )


def risk_record(email: str, score, risk_date: str = "2020-09-14T07:54:06.417Z") -> str:
    return json.dumps({"customer": email, "score": score, "riskDate": risk_date})


def kafka_rows(topic: str, values: list[str | None], timestamp: datetime, first_offset: int = 0):
    """Rows shaped like Spark's Kafka source, one per value, in offset order."""
    return [
        (None, None if v is None else v.encode("utf-8"), topic, 0, first_offset + i, timestamp)
        for i, v in enumerate(values)
    ]


def kafka_df(spark, topic: str, values: list[str | None], timestamp=datetime(2026, 1, 1)):
    return spark.createDataFrame(kafka_rows(topic, values, timestamp), KAFKA_SOURCE_SCHEMA)
