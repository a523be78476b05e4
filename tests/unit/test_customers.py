"""Customers decoded from topic `redis-server` (sparkpyrediskafkastreamtoconsole.py)."""

import json
from datetime import datetime

from pyspark.testing import assertDataFrameEqual, assertSchemaEqual

from stedi.schemas import CUSTOMER_ROW_SCHEMA
from stedi.transforms import customers_from_redis, redis_customer_members
from tests.records import (
    SAM_TEST,
    customer,
    customer_record,
    kafka_df,
    set_record,
    zadd_record,
)

T0 = datetime(2026, 1, 1)


def customers(spark, values):
    return customers_from_redis(kafka_df(spark, "redis-server", values, T0))


def expected(spark, *rows):
    return spark.createDataFrame([(*r, T0) for r in rows], CUSTOMER_ROW_SCHEMA)


def test_spec_sample_record_decodes_to_sam_test_born_2001(spark):
    result = customers(spark, [customer_record(SAM_TEST)])
    assertSchemaEqual(result.schema, CUSTOMER_ROW_SCHEMA)
    assertDataFrameEqual(result, expected(spark, ("sam.test@test.com", "Sam Test", 2001)))


def test_unpadded_base64_key_and_member_decode_like_padded(spark):
    padded = customers(spark, [customer_record(SAM_TEST, padded=True)])
    unpadded = customers(spark, [customer_record(SAM_TEST, padded=False)])
    assertDataFrameEqual(unpadded, padded)
    assert unpadded.count() == 1


def test_every_member_of_a_multi_member_zadd_becomes_a_customer(spark):
    record = customer_record(
        customer("Ann One", "ann@test.com", "1965-01-01"),
        customer("Bob Two", "bob@test.com", "1964-01-01"),
        customer("Cy Three", "cy@test.com", "1963-01-01"),
    )
    assertDataFrameEqual(
        customers(spark, [record]),
        expected(
            spark,
            ("ann@test.com", "Ann One", 1965),
            ("bob@test.com", "Bob Two", 1964),
            ("cy@test.com", "Cy Three", 1963),
        ),
    )


def test_a_customer_written_twice_appears_twice_before_the_join_deduplicates(spark):
    record = customer_record(SAM_TEST)
    row = ("sam.test@test.com", "Sam Test", 2001)
    assertDataFrameEqual(customers(spark, [record, record]), expected(spark, row, row))


def test_other_keys_and_commands_are_ignored_without_losing_the_customer_beside_them(spark):
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
    assertDataFrameEqual(
        customers(spark, values), expected(spark, ("sam.test@test.com", "Sam Test", 2001))
    )


def test_each_kind_of_malformed_record_gets_a_problem_and_good_rows_survive(spark):
    no_birth_day = {k: v for k, v in SAM_TEST.items() if k != "birthDay"}
    values = [
        "not json at all",
        None,
        zadd_record("Customer", "not customer json"),
        json.dumps({"key": "Q3VzdG9tZXI=", "zSetEntries": [{"element": "***", "score": 0}]}),
        customer_record({k: v for k, v in SAM_TEST.items() if k != "email"}),
        customer_record(no_birth_day),
        customer_record({**SAM_TEST, "birthDay": "03/01/2001"}),
        json.dumps({"key": "Q3VzdG9tZXI=", "existType": "NONE", "zSetEntries": []}),
        json.dumps({"key": "Q3VzdG9tZXI=", "value": "eA==", "expiredType": "NONE"}),
        customer_record(SAM_TEST),
    ]
    members = redis_customer_members(kafka_df(spark, "redis-server", values, T0))
    problems = [r.problem for r in members.orderBy("offset").collect()]
    assert problems == [
        "value is not a Redis source record",
        "value is not a Redis source record",
        "member is not customer JSON",
        "member is not valid base64",
        "customer has no email",
        "customer birthDay is missing or not yyyy-MM-dd",
        "customer birthDay is missing or not yyyy-MM-dd",
        "Customer ZADD without members",
        None,
    ]
    assertDataFrameEqual(
        customers(spark, values), expected(spark, ("sam.test@test.com", "Sam Test", 2001))
    )


def test_non_ascii_names_survive_base64_and_json(spark):
    result = customers(
        spark, [customer_record(customer("Zoë Ünal 山田", "zoe@test.com", "1955-05-05"))]
    )
    assertDataFrameEqual(result, expected(spark, ("zoe@test.com", "Zoë Ünal 山田", 1955)))
