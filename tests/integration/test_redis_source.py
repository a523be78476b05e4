"""The Redis source publishes every Redis write to `redis-server`, byte for byte."""

import base64
import json
import subprocess
import sys

import pytest

from stedi.stack import services
from tests.stack_support import TopicReader

pytestmark = pytest.mark.integration


def b64(raw: bytes) -> str:
    return base64.b64encode(raw).decode()


@pytest.fixture
def redis_server_topic(stack):
    reader = TopicReader(stack, stack.redis_topic)
    yield reader
    reader.close()


def records_for(records, key: bytes):
    return [r for r in records if r.key == key]


def test_a_zadd_arrives_with_the_connector_fields_byte_for_byte(
    redis_client, redis_server_topic, unique
):
    key = f"Customer-{unique}".encode()
    member = '{"customerName":"Sam Test","email":"sam.test@test.com","birthDay":"2001-01-03"}'
    redis_client.zadd(key, {member: 0})
    [record] = redis_server_topic.read(lambda rs: records_for(rs, key))
    entry = '{"element":"' + b64(member.encode()) + '","score":0.0}'
    assert (
        record.value
        == (
            '{"key":"' + b64(key) + '","existType":"NONE","ch":false,"incr":false,'
            '"zSetEntries":[' + entry + '],"zsetEntries":[' + entry + "]}"
        ).encode()
    )


def test_a_zadd_with_several_members_and_flags_is_one_record_with_all_members(
    redis_client, redis_server_topic, unique
):
    key = f"Multi-{unique}".encode()
    redis_client.execute_command("ZADD", key, "NX", "CH", 1, "a", 2.5, "b", -3, "ü")
    [record] = redis_server_topic.read(lambda rs: records_for(rs, key))
    value = json.loads(record.value)
    assert value["existType"] == "NX" and value["ch"] is True and value["incr"] is False
    members = [(base64.b64decode(e["element"]).decode(), e["score"]) for e in value["zSetEntries"]]
    assert members == [("a", 1.0), ("b", 2.5), ("ü", -3.0)]
    assert value["zsetEntries"] == value["zSetEntries"]


def test_a_set_is_published_with_its_expiry(redis_client, redis_server_topic, unique):
    plain, expiring = f"token-{unique}".encode(), f"session-{unique}".encode()
    redis_client.set(plain, "abc")
    redis_client.set(expiring, "xyz", px=600000)
    records = redis_server_topic.read(
        lambda rs: records_for(rs, plain) and records_for(rs, expiring)
    )
    [first] = records_for(records, plain)
    assert (
        first.value
        == (
            '{"key":"' + b64(plain) + '","value":"' + b64(b"abc") + '",'
            '"expiredType":"NONE","expiredValue":null,"existType":"NONE"}'
        ).encode()
    )
    [second] = records_for(records, expiring)
    value = json.loads(second.value)
    assert value["expiredType"] == "MS" and value["expiredValue"] > 0
    assert base64.b64decode(value["value"]) == b"xyz"


def test_writes_made_while_the_source_is_down_are_published_once_after_restart(
    stack, redis_client, redis_server_topic, unique
):
    before, during = f"before-{unique}".encode(), f"during-{unique}".encode()
    redis_client.zadd(before, {"1": 0})
    assert records_for(redis_server_topic.read(lambda rs: records_for(rs, before)), before)

    assert services.REDIS_SOURCE.stop(), "the Redis source was not running"
    for i in range(50):
        redis_client.zadd(during, {str(i): i})
    services.start_redis_source(stack)

    records = redis_server_topic.read(lambda rs: len(records_for(rs, during)) >= 50)
    records += redis_server_topic.read_quietly(5)
    assert len(records_for(records, during)) == 50, "each write exactly once"
    assert records_for(records, before) == [], "nothing published twice"
    scores = [json.loads(r.value)["zSetEntries"][0]["score"] for r in records_for(records, during)]
    assert scores == [float(i) for i in range(50)], "in write order"


def test_the_running_source_reports_healthy_through_its_cli(stack):
    state = services.STACK_DIR / "redis-source.json"
    result = subprocess.run(
        [sys.executable, "-m", "stedi.redis_source.health", "--state", str(state)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert result.stdout.startswith("healthy: streaming") and "Kafka connected" in result.stdout
