"""The browser tests' services: the real local stack and the scripts' queries in this
process's Spark (tests/stack_support.py)."""

from tests import stack_support

stack = stack_support.stack
kafka_spark = stack_support.kafka_spark
