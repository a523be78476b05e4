"""Confirmed delivery: a record counts only once Kafka confirmed it; too large ones dead-letter."""

import json

import pytest
from kafka.errors import KafkaTimeoutError

from stedi.config import Settings
from stedi.redis_source.delivery import Delivery, DeliveryError, Outgoing

SETTINGS = Settings(redis_topic="redis-server", dead_letter_topic="dead")


class Future:
    def __init__(self, error=None):
        self.error = error

    def get(self, timeout=None):
        if self.error:
            raise self.error
        return "metadata"


class Producer:
    """Records what is sent; the futures of records whose value is in `failing` fail."""

    def __init__(self, failing=()):
        self.sent, self.failing = [], set(failing)

    def send(self, topic, key=None, value=None, headers=None):
        self.sent.append((topic, key, value, dict(headers)))
        if value in self.failing:
            return Future(KafkaTimeoutError("Expiring 1 record(s): 120000 ms has passed"))
        return Future()

    def flush(self, timeout=None):
        """Like kafka-python's: returns normally even when a record failed (it only logs)."""


def outgoing(value: bytes, offset: int) -> Outgoing:
    return Outgoing(b"Customer", value, "ZADD", "r1", offset)


def test_a_record_kafka_did_not_confirm_fails_the_batch_instead_of_passing_silently():
    delivery = Delivery(SETTINGS, max_record_bytes=10_000, producer=Producer(failing={b"b"}))
    for i, value in enumerate((b"a", b"b", b"c")):
        delivery.send(outgoing(value, i))
    with pytest.raises(DeliveryError, match="did not confirm 1 of 3"):
        delivery.confirm()
    assert delivery.confirmed == 0


def test_confirmed_records_carry_their_replication_position_in_headers():
    producer = Producer()
    delivery = Delivery(SETTINGS, max_record_bytes=10_000, producer=producer)
    delivery.send(outgoing(b"a", 7))
    assert delivery.confirm() == 1 and delivery.confirmed == 1
    [(topic, key, value, headers)] = producer.sent
    assert (topic, key, value) == ("redis-server", b"Customer", b"a")
    assert headers == {"redis.replid": b"r1", "redis.offset": b"7"}


def test_a_record_over_the_topic_limit_is_dead_lettered_and_the_others_go_on():
    producer = Producer()
    delivery = Delivery(SETTINGS, max_record_bytes=10_000, producer=producer)
    delivery.send(outgoing(b"small", 1))
    delivery.send(outgoing(b"x" * 20_000, 2))
    delivery.send(outgoing(b"after", 3))
    assert delivery.confirm() == 2
    assert [(t, v) for t, _, v, _ in producer.sent[:2]] == [
        ("redis-server", b"small"),
        ("redis-server", b"after"),
    ]
    [(topic, key, value, headers)] = producer.sent[2:]
    letter = json.loads(value)
    assert topic == "dead" and key == b"Customer" and len(value) < 1024
    assert headers == {"redis.replid": b"r1", "redis.offset": b"2"}
    assert (letter["command"], letter["size"], letter["offset"]) == ("ZADD", 20_000, 2)
    assert "max.message.bytes of 10000" in letter["reason"]
    assert delivery.dead_letters == 1


def test_a_dead_letter_kafka_did_not_confirm_fails_the_batch():
    big = b"x" * 20_000
    producer = Producer()
    delivery = Delivery(SETTINGS, max_record_bytes=10_000, producer=producer)
    delivery.send(outgoing(big, 1))
    producer.send = lambda *a, **k: Future(KafkaTimeoutError("no broker"))
    with pytest.raises(DeliveryError, match="dead letter"):
        delivery.confirm()
