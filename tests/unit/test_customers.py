"""Customers decoded from topic `redis-server`.

Every case runs against the join script's decoder; the console script carries the same
function (tests/unit/test_scripts_standalone.py).
"""

import base64
import json
from datetime import date, datetime, timedelta

import pytest
from pyspark.testing import assertDataFrameEqual

from tests.records import (
    SAM_TEST,
    customer,
    customer_record,
    kafka_df,
    set_record,
    zadd_record,
)
from tests.scripts import join_job

T0 = datetime(2026, 1, 1)
ROW = "email string, customerName string, birthYear int"


@pytest.fixture
def job():
    return join_job


def members(spark, job, values):
    return job.customer_members(kafka_df(spark, "redis-server", values, T0))


def customers(spark, job, values):
    return (
        members(spark, job, values)
        .where("problem IS NULL")
        .select("email", "customerName", "birthYear")
    )


def problems(spark, job, values):
    rows = members(spark, job, values).orderBy("offset", "member").collect()
    return [(r.offset, r.member, r.problem) for r in rows]


def test_spec_sample_record_decodes_to_sam_test_born_2001(spark, job):
    result = customers(spark, job, [customer_record(SAM_TEST)])
    assertDataFrameEqual(
        result, spark.createDataFrame([("sam.test@test.com", "Sam Test", 2001)], ROW)
    )


def test_unpadded_base64_key_and_member_decode_like_padded(spark, job):
    padded = customers(spark, job, [customer_record(SAM_TEST, padded=True)])
    unpadded = customers(spark, job, [customer_record(SAM_TEST, padded=False)])
    assertDataFrameEqual(unpadded, padded)
    assert unpadded.count() == 1


def test_every_member_of_a_multi_member_zadd_becomes_a_customer(spark, job):
    record = customer_record(
        customer("Ann One", "ann@test.com", "1965-01-01"),
        customer("Bob Two", "bob@test.com", "1964-01-01"),
        customer("Cy Three", "cy@test.com", "1963-01-01"),
    )
    assertDataFrameEqual(
        customers(spark, job, [record]),
        spark.createDataFrame(
            [
                ("ann@test.com", "Ann One", 1965),
                ("bob@test.com", "Bob Two", 1964),
                ("cy@test.com", "Cy Three", 1963),
            ],
            ROW,
        ),
    )


def test_other_keys_and_commands_are_ignored_without_losing_the_customer_beside_them(spark, job):
    rapid_step_test = json.dumps(
        {"startTime": 1, "stopTime": 2, "testTime": 1, "totalSteps": 30, "customer": SAM_TEST}
    )
    user = json.dumps({"userName": "u", "email": "u@test.com", "birthDate": "1970-01-01"})
    values = [
        zadd_record("User", user),
        zadd_record("RapidStepTest", rapid_step_test),
        set_record("Customer", json.dumps(SAM_TEST)),
        set_record("token", "abc"),
        customer_record(SAM_TEST),
    ]
    assert problems(spark, job, values) == [(4, 0, None)]


def test_a_key_of_other_bytes_than_utf8_is_another_key_not_a_dead_letter(spark, job):
    record = json.loads(zadd_record("x", "y"))
    record["key"] = base64.b64encode(b"\xff\xfe").decode()
    assert problems(spark, job, [json.dumps(record), customer_record(SAM_TEST)]) == [(1, 0, None)]


def test_a_zadd_with_a_good_and_a_bad_member_gives_one_customer_and_one_problem(spark, job):
    record = customer_record(SAM_TEST, {**SAM_TEST, "email": "not-an-email"})
    assert problems(spark, job, [record]) == [
        (0, 0, None),
        (0, 1, "customer email is missing or not an email address"),
    ]


def test_each_kind_of_malformed_record_gets_a_problem_and_good_rows_survive(spark, job):
    future = (date.today() + timedelta(days=30)).isoformat()
    bad_key = json.loads(customer_record(SAM_TEST))
    bad_key["key"] = "%%%not base64"
    not_utf8_member = json.loads(customer_record(SAM_TEST))
    not_utf8_member["zSetEntries"][0]["element"] = base64.b64encode(b'{"email":"\xff"}').decode()
    values = [
        "not json at all",  # 0
        None,  # 1
        zadd_record("Customer", "not customer json"),  # 2
        json.dumps({"key": "Q3VzdG9tZXI=", "zSetEntries": [{"element": "***", "score": 0}]}),
        customer_record({k: v for k, v in SAM_TEST.items() if k != "email"}),  # 4
        customer_record({k: v for k, v in SAM_TEST.items() if k != "birthDay"}),  # 5
        customer_record({**SAM_TEST, "birthDay": "03/01/2001"}),  # 6
        json.dumps({"key": "Q3VzdG9tZXI=", "existType": "NONE", "zSetEntries": []}),  # 7
        json.dumps(bad_key),  # 8
        json.dumps(not_utf8_member),  # 9
        customer_record({**SAM_TEST, "email": ""}),  # 10
        customer_record({**SAM_TEST, "email": "sam at test"}),  # 11
        customer_record({**SAM_TEST, "birthDay": future}),  # 12
        json.dumps({"key": "Q3VzdG9tZXI="}),  # 13: neither a ZADD nor a SET
        '["a", "list"]',  # 14
        customer_record(SAM_TEST),  # 15
    ]
    assert problems(spark, job, values) == [
        (0, None, "value is not a Redis source record"),
        (1, None, "value is missing"),
        (2, 0, "member is not customer JSON"),
        (3, 0, "member is not valid base64"),
        (4, 0, "customer email is missing or not an email address"),
        (5, 0, "customer birthDay is missing or not yyyy-MM-dd"),
        (6, 0, "customer birthDay is missing or not yyyy-MM-dd"),
        (7, None, "Customer ZADD without members"),
        (8, None, "key is not valid base64"),
        (9, 0, "member is not valid UTF-8"),
        (10, 0, "customer email is missing or not an email address"),
        (11, 0, "customer email is missing or not an email address"),
        (12, 0, "customer birthDay is in the future"),
        (13, None, "value is not a Redis source record"),
        (14, None, "value is not a Redis source record"),
        (15, 0, None),
    ]


def test_a_value_of_invalid_utf8_is_a_problem_not_an_error(spark, job):
    rows = [(None, b'{"key":"\xff\xfe"}', "redis-server", 0, 0, T0)]
    from tests.records import KAFKA_SOURCE_SCHEMA

    result = job.customer_members(spark.createDataFrame(rows, KAFKA_SOURCE_SCHEMA)).collect()
    assert [r.problem for r in result] == ["value is not valid UTF-8"]


def test_non_ascii_names_survive_base64_and_json(spark, job):
    result = customers(
        spark, job, [customer_record(customer("Zoë Ünal 山田", "zoe@test.com", "1955-05-05"))]
    )
    assertDataFrameEqual(
        result, spark.createDataFrame([("zoe@test.com", "Zoë Ünal 山田", 1955)], ROW)
    )
