"""Explicit schemas of every wire format (see STEDI-SPEC.md), declared once.

The jobs and the tests import these constants; nothing is ever inferred.
"""

from pyspark.sql.types import (
    ArrayType,
    BinaryType,
    BooleanType,
    DoubleType,
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
        StructField("key", BinaryType(), True),
        StructField("value", BinaryType(), True),
        StructField("topic", StringType(), True),
        StructField("partition", IntegerType(), True),
        StructField("offset", LongType(), True),
        StructField("timestamp", TimestampType(), True),
    ]
)

# A record of topic `redis-server`. Real ZADD records carry the member array twice,
# as `zSetEntries` and `zsetEntries`. Only `zSetEntries` is declared: the JSON
# parser matches names exactly, and two names differing in case only would be
# ambiguous in Spark's case-insensitive analysis. SET records have `value` and no
# array; they are parsed too and then dropped by the key/array filters.
ZSET_ENTRY_SCHEMA = StructType(
    [
        StructField("element", StringType(), True),
        StructField("score", DoubleType(), True),
    ]
)
REDIS_RECORD_SCHEMA = StructType(
    [
        StructField("key", StringType(), True),
        StructField("existType", StringType(), True),
        StructField("ch", BooleanType(), True),
        StructField("incr", BooleanType(), True),
        StructField("zSetEntries", ArrayType(ZSET_ENTRY_SCHEMA), True),
    ]
)

# A member of the `Customer` sorted set.
CUSTOMER_SCHEMA = StructType(
    [
        StructField("customerName", StringType(), True),
        StructField("email", StringType(), True),
        StructField("phone", StringType(), True),
        StructField("birthDay", StringType(), True),
    ]
)

# A record of topic `stedi-events`. `score` may be an integer or a decimal JSON
# number; DoubleType accepts both. `riskDate` is kept as text here and converted
# with try_to_timestamp so that a bad date gives null instead of failing the query.
RISK_EVENT_SCHEMA = StructType(
    [
        StructField("customer", StringType(), True),
        StructField("score", DoubleType(), True),
        StructField("riskDate", StringType(), True),
    ]
)

# What the console jobs and the join produce.
CUSTOMER_ROW_SCHEMA = StructType(
    [
        StructField("email", StringType(), True),
        StructField("customerName", StringType(), True),
        StructField("birthYear", IntegerType(), True),
        StructField("eventTime", TimestampType(), True),
    ]
)
RISK_ROW_SCHEMA = StructType(
    [
        StructField("customer", StringType(), True),
        StructField("score", DoubleType(), True),
        StructField("riskDate", TimestampType(), True),
        StructField("eventTime", TimestampType(), True),
    ]
)
# The value of an output-topic record (`customer-risk`), serialised as JSON.
CUSTOMER_RISK_SCHEMA = StructType(
    [
        StructField("customer", StringType(), True),
        StructField("score", DoubleType(), True),
        StructField("email", StringType(), True),
        StructField("birthYear", IntegerType(), True),
    ]
)
