"""Risk scores parsed from topic `stedi-events`.

Every case runs against the join script's decoder; the console script carries the same
function (tests/unit/test_scripts_standalone.py).
"""

from datetime import datetime

import pytest
from pyspark.testing import assertDataFrameEqual

from tests.records import KAFKA_SOURCE_SCHEMA, kafka_df, risk_record
from tests.scripts import events_job, join_job

T0 = datetime(2026, 1, 1)
RISK_DATE = datetime(2020, 9, 14, 7, 54, 6, 417000)
ROW = "customer string, score double, riskDate timestamp"
GOOD_DATE = "2020-09-14T07:54:06.417Z"


@pytest.fixture
def job():
    return join_job


def test_integer_and_decimal_scores_both_parse_as_doubles(spark, job):
    values = [risk_record("a@test.com", 7), risk_record("b@test.com", -2.35)]
    result = job.risk_events(kafka_df(spark, "stedi-events", values, T0))
    assertDataFrameEqual(
        result.where("problem IS NULL").select("customer", "score", "riskDate"),
        spark.createDataFrame(
            [("a@test.com", 7.0, RISK_DATE), ("b@test.com", -2.35, RISK_DATE)], ROW
        ),
    )


def test_malformed_events_get_a_reason_and_good_ones_are_kept(spark, job):
    values = [
        "{{ not json",
        None,
        '{"score": 3.0, "riskDate": "2020-09-14T07:54:06.417Z"}',
        '{"customer": "a@test.com", "score": "high", "riskDate": "2020-09-14T07:54:06.417Z"}',
        '["a list"]',
        risk_record("good@test.com", 1.5),
        risk_record("baddate@test.com", 2.0, risk_date="yesterday"),
        f'{{"customer": "a@test.com", "score": NaN, "riskDate": "{GOOD_DATE}"}}',
        f'{{"customer": "a@test.com", "score": "Infinity", "riskDate": "{GOOD_DATE}"}}',
        f'{{"customer": "a@test.com", "score": "-Infinity", "riskDate": "{GOOD_DATE}"}}',
        risk_record("", 1.0),
        risk_record("not an email", 1.0),
        '{"customer": "a@test.com", "score": 1.0}',
        '{"customer": "a@test.com", "score": 1.0, "riskDate": -1000}',
        '{"customer": "a@test.com", "score": 1.0, "riskDate": "2020"}',
    ]
    rows = job.risk_events(kafka_df(spark, "stedi-events", values, T0)).orderBy("offset")
    assert [r.problem for r in rows.collect()] == [
        "value is not a JSON object",
        "value is missing",
        "customer is missing or not an email address",
        "score is missing or not a number",
        "value is not a JSON object",
        None,
        "riskDate is missing or not an ISO-8601 time",
        "value is not a JSON object",  # a bare NaN is not JSON
        "score is not a finite number",
        "score is not a finite number",
        "customer is missing or not an email address",
        "customer is missing or not an email address",
        "riskDate is missing or not an ISO-8601 time",
        "riskDate is missing or not an ISO-8601 time",  # Spark alone reads the year -1000
        "riskDate is missing or not an ISO-8601 time",
    ]


def test_a_value_of_invalid_utf8_is_a_problem_not_an_error(spark, job):
    rows = [(None, b'{"customer":"\xff@test.com"}', "stedi-events", 0, 0, T0)]
    result = job.risk_events(spark.createDataFrame(rows, KAFKA_SOURCE_SCHEMA)).collect()
    assert [r.problem for r in result] == ["value is not valid UTF-8"]


def test_console_rows_show_good_events_only(spark):
    values = [risk_record("a@test.com", 7), "{{"]
    result = events_job.console_rows(kafka_df(spark, "stedi-events", values, T0))
    assertDataFrameEqual(result, spark.createDataFrame([("a@test.com", 7.0, RISK_DATE)], ROW))
