"""Every example of docs/formats.md, parsed with the scripts' own schemas (Spark's
from_json, FAILFAST) and checked against the code that writes it: the page cannot drift
from the formats the code reads and writes."""

from __future__ import annotations

import asyncio
import hashlib
import json
import re
from datetime import datetime, timezone
from decimal import Decimal

import fakeredis
import pytest
from pyspark.sql.types import ArrayType, StructType

from stedi.app.kafka_io import graph_point
from stedi.app.quality import QualityCounts
from stedi.app.risk import Risk, StepTest, risk_event, risk_score
from stedi.app.store import Store
from stedi.redis_source.records import set_value, too_large_record, zadd_value
from stedi.stack.services import ROOT
from tests.scripts import events_job, join_job, load_script, redis_job

score_job = load_script("sparkpyriskscore.py")
EXAMPLE = re.compile(r"<!-- example: ([\w-]+) -->\n```json\n(.*?)\n```", re.S)
FOUND = EXAMPLE.findall((ROOT / "docs" / "formats.md").read_text())
EXAMPLES = {name: json.loads(text) for name, text in FOUND}
TEXTS = dict(FOUND)

# What the scripts read, and which of their schemas read it.
READ_BY = {
    "customer": [redis_job.CUSTOMER_SCHEMA, join_job.CUSTOMER_SCHEMA],
    "rapid-step-test": [score_job.STEP_TEST_SCHEMA],
    "redis-zadd": [
        redis_job.REDIS_RECORD_SCHEMA,
        join_job.REDIS_RECORD_SCHEMA,
        score_job.ZADD_SCHEMA,
    ],
    "redis-set": [redis_job.REDIS_RECORD_SCHEMA, join_job.REDIS_RECORD_SCHEMA],
    "stedi-events": [s.RISK_EVENT_SCHEMA for s in (events_job, join_job, score_job)],
    "stedi-risk-spark": [join_job.RISK_EVENT_SCHEMA],
}
# Written by Python code or by Spark, checked in the tests below.
WRITTEN = {
    "user",
    "customer-risk",
    "risk-quality",
    "spark-dead-letter",
    "redis-source-dead-letter",
    "risk-score",
    "tests-of",
    "latest-test",
}


def test_every_format_has_exactly_one_example():
    assert len(FOUND) == len(EXAMPLES)
    assert set(EXAMPLES) == set(READ_BY) | WRITTEN


def parsed(spark, text: str, schema) -> dict:
    from pyspark.sql import functions as F

    row = (
        spark.createDataFrame([(text,)], "text string")
        .select(F.from_json("text", schema, {"mode": "FAILFAST"}).alias("v"))
        .first()
    )
    return row["v"].asDict(recursive=True)


def read_part(value, data_type):
    """The part of a parsed JSON value that `data_type` declares (nested structs too)."""
    if isinstance(data_type, StructType) and isinstance(value, dict):
        return {
            f.name: read_part(value[f.name], f.dataType)
            for f in data_type.fields
            if f.name in value
        }
    if isinstance(data_type, ArrayType) and isinstance(value, list):
        return [read_part(v, data_type.elementType) for v in value]
    return value


@pytest.mark.parametrize("name", sorted(READ_BY))
def test_each_read_example_parses_with_every_schema_that_reads_it(spark, name):
    """A schema declares the fields its job reads, each documented in a format it reads,
    and reads the example's values."""
    example = EXAMPLES[name]
    for schema in READ_BY[name]:
        documented = {k for n, schemas in READ_BY.items() if schema in schemas for k in EXAMPLES[n]}
        assert set(schema.fieldNames()) <= documented, f"{name}: fields the page does not document"
        values = parsed(spark, TEXTS[name], schema)
        assert {k: values[k] for k in example if k in schema.fieldNames()} == read_part(
            example, schema
        )
    if "zsetEntries" in example:
        assert example["zsetEntries"] == example["zSetEntries"]


def test_the_redis_records_are_what_the_redis_source_writes():
    member = TEXTS["customer"].encode()
    assert json.loads(zadd_value(b"Customer", [(member, 0.0)])) == EXAMPLES["redis-zadd"]
    record = set_value(b"greeting", b"hello", "MS", 1796083200000)
    assert json.loads(record) == EXAMPLES["redis-set"]
    example = EXAMPLES["redis-source-dead-letter"]
    _, value = too_large_record(
        b"Customer",
        "ZADD",
        example["size"],
        "redis-server",
        example["replid"],
        example["offset"],
        False,
        example["reason"],
    )
    assert json.loads(value) == example


def test_the_app_writes_the_events_and_users_and_reads_the_outputs():
    event = EXAMPLES["stedi-events"]
    stop_ms = EXAMPLES["rapid-step-test"]["stopTime"]
    _, value = risk_event(event["customer"], Risk(event["score"], stop_ms))
    assert json.loads(value) == event == EXAMPLES["stedi-risk-spark"]

    server, user = fakeredis.FakeServer(), EXAMPLES["user"]
    store = Store(fakeredis.FakeAsyncRedis(server=server))
    asyncio.run(store.add_user(user["userName"], user["email"], "a long password"))
    [stored] = [json.loads(m) for m in fakeredis.FakeRedis(server=server).zrange("User", 0, -1)]
    assert list(stored) == list(user) and stored["passwordHash"].startswith("$argon2id$")

    joined = EXAMPLES["customer-risk"]
    assert graph_point(TEXTS["customer-risk"].encode()) == {
        "birthYear": joined["birthYear"],
        "score": joined["score"],
    }
    counts = QualityCounts()
    counts.add(TEXTS["risk-quality"].encode())
    assert counts.line() == "scores checked: 1, agreeing: 1"


def test_the_app_indexes_each_test_with_its_score_beside_rapid_step_test():
    test, customer = EXAMPLES["rapid-step-test"], EXAMPLES["rapid-step-test"]["customer"]
    server = fakeredis.FakeServer()
    store = Store(fakeredis.FakeAsyncRedis(server=server))

    async def store_tests():
        # Three earlier tests (70, 70, 66 s), then the example's 60 s: (70+70)/2 - (66+60)/2
        for before, seconds in ((3, 70), (2, 70), (1, 66)):
            stop = test["stopTime"] - before * 600_000
            await store.add_test(customer, stop - seconds * 1000, stop)
        return await store.add_test(customer, test["startTime"], test["stopTime"])

    _, risk, _ = asyncio.run(store_tests())
    assert risk == Risk(EXAMPLES["stedi-events"]["score"], test["stopTime"])
    redis = fakeredis.FakeRedis(server=server)
    field = f"{test['stopTime']}:{test['startTime']}"
    assert redis.hget(f"TestsOf:{customer['email']}", field).decode() == TEXTS["tests-of"]
    assert redis.hget("LatestTest", customer["email"]).decode() == TEXTS["latest-test"]


def test_the_risk_score_example_is_the_models_score():
    example = EXAMPLES["risk-score"]
    tests = [StepTest(i * 600_000, s * 1000) for i, s in enumerate(example["durationsSeconds"])]
    assert risk_score(tests).score == example["score"]
    first, second, third, fourth = example["durationsSeconds"]
    expected = (Decimal(first + second) - Decimal(third + fourth)) / 2
    assert float(expected) == example["score"]


def test_the_spark_outputs_are_what_the_scripts_write(spark):
    joined = EXAMPLES["customer-risk"]
    risk_date = EXAMPLES["stedi-events"]["riskDate"]
    rows = spark.createDataFrame(
        [{**joined, "riskDate": datetime.fromisoformat(risk_date)}],
        "customer string, score double, email string, birthYear int, riskDate timestamp",
    )
    [record] = join_job.customer_risk_records(rows).collect()
    assert record["key"] == joined["email"] and json.loads(record["value"]) == joined
    assert [(h.key, bytes(h.value)) for h in record["headers"]] == [
        ("riskDate", risk_date.encode("utf-8"))
    ]

    check = EXAMPLES["risk-quality"]
    risk_ms = EXAMPLES["rapid-step-test"]["stopTime"]
    recent_two = 200_000
    previous_two = recent_two + int(check["sparkScore"] * 2000)
    rows = spark.createDataFrame(
        [(check["customer"], kind, risk_ms, previous_two, recent_two, check["appScore"])
         for kind in ("check", "score")],
        score_job.SCORE_OUTPUT_SCHEMA,
    )  # fmt: skip
    records = score_job.score_records(score_job.with_scores(rows), "spark", "quality").collect()
    by_topic = {r["topic"]: json.loads(r["value"]) for r in records}
    assert by_topic == {"quality": check, "spark": EXAMPLES["stedi-risk-spark"]}


def test_the_spark_dead_letter_is_what_the_join_writes(spark):
    letter = EXAMPLES["spark-dead-letter"]
    raw = letter["value"].encode()
    assert letter["valueBytes"] == len(raw)
    assert letter["valueSha256"] == hashlib.sha256(raw).hexdigest()
    moment = datetime.fromisoformat(letter["sourceTimestamp"].replace("Z", "+00:00"))
    rows = spark.createDataFrame(
        [(letter["sourceTopic"], letter["sourcePartition"], letter["sourceOffset"],
          moment.astimezone(timezone.utc), letter["reason"], bytearray(raw))],
        "topic string, partition int, offset long, timestamp timestamp, problem string, "
        "value binary",
    )  # fmt: skip
    [record] = join_job.checked_dead_letters(rows.select("*", *join_job.dead_letter())).collect()
    assert record["key"] == "stedi-events/0/42"
    assert json.loads(record["value"]) == letter
