"""Risk scores parsed from topic `stedi-events` (sparkpyeventskafkastreamtoconsole.py)."""

from datetime import datetime

from pyspark.testing import assertDataFrameEqual, assertSchemaEqual

from stedi.schemas import RISK_ROW_SCHEMA
from stedi.transforms import dead_letters, risk_events, risk_events_with_problems
from tests.records import kafka_df, risk_record

T0 = datetime(2026, 1, 1)
RISK_DATE = datetime(2020, 9, 14, 7, 54, 6, 417000)


def test_integer_and_decimal_scores_both_parse_as_doubles(spark):
    values = [risk_record("a@test.com", 7), risk_record("b@test.com", -2.35)]
    result = risk_events(kafka_df(spark, "stedi-events", values, T0))
    assertSchemaEqual(result.schema, RISK_ROW_SCHEMA)
    assertDataFrameEqual(
        result,
        spark.createDataFrame(
            [("a@test.com", 7.0, RISK_DATE, T0), ("b@test.com", -2.35, RISK_DATE, T0)],
            RISK_ROW_SCHEMA,
        ),
    )


def test_malformed_events_are_dead_lettered_with_a_reason_and_good_ones_kept(spark):
    values = [
        "{{ not json",
        None,
        '{"score": 3.0}',
        '{"customer": "a@test.com", "score": "high"}',
        '["a list"]',
        risk_record("good@test.com", 1.5),
        risk_record("baddate@test.com", 2.0, risk_date="yesterday"),
    ]
    kafka = kafka_df(spark, "stedi-events", values, T0)
    problems = [r.problem for r in risk_events_with_problems(kafka).orderBy("offset").collect()]
    assert problems == [
        "value is not a JSON object",
        "value is not a JSON object",
        "risk event has no customer",
        "risk event has no numeric score",
        "value is not a JSON object",
        None,
        None,
    ]
    assertDataFrameEqual(
        risk_events(kafka),
        spark.createDataFrame(
            [("good@test.com", 1.5, RISK_DATE, T0), ("baddate@test.com", 2.0, None, T0)],
            RISK_ROW_SCHEMA,
        ),
    )
    letters = dead_letters(risk_events_with_problems(kafka)).orderBy("key").collect()
    assert [r.key for r in letters] == [f"stedi-events/0/{i}" for i in range(5)]
    assert letters[3].value == (
        '{"sourceTopic":"stedi-events","sourcePartition":0,"sourceOffset":3,'
        '"problem":"risk event has no numeric score",'
        '"value":"{\\"customer\\": \\"a@test.com\\", \\"score\\": \\"high\\"}"}'
    )
