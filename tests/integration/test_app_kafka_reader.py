"""read_topic, the reconnecting Kafka reader behind the app's graph feed and quality line."""

import threading
import time

import pytest
from kafka.errors import KafkaError

from stedi.app.kafka_io import read_topic
from tests.app_server import free_port
from tests.stack_support import create_topics, produce

pytestmark = pytest.mark.integration


class Calls:
    """What read_topic called back, and the event that stops it."""

    def __init__(self):
        self.connects, self.records, self.failures = 0, [], []
        self.stop = threading.Event()

    def connected(self):
        self.connects += 1

    def unavailable(self, exc):
        self.failures.append(exc)
        self.stop.set()  # one failure is enough to see: stop instead of retrying

    def read(self, bootstrap_servers, topic, offset_reset):
        thread = threading.Thread(
            target=read_topic,
            args=(bootstrap_servers, topic, self.stop),
            kwargs={
                "offset_reset": offset_reset,
                "on_connect": self.connected,
                "on_records": self.records.extend,
                "on_unavailable": self.unavailable,
            },
            daemon=True,
        )
        thread.start()
        return thread


def test_the_reader_hands_over_each_record_from_the_earliest_and_ends_when_stopped(stack, unique):
    topic = f"reader-{unique}"
    create_topics(stack, topic)
    produce(stack, topic, ["one", "two", "three"])
    calls = Calls()
    thread = calls.read(stack.kafka_bootstrap_servers, topic, "earliest")
    deadline = time.monotonic() + 30
    while len(calls.records) < 3 and time.monotonic() < deadline:
        time.sleep(0.1)
    calls.stop.set()
    thread.join(10)
    assert not thread.is_alive()
    assert [record.value for record in calls.records] == [b"one", b"two", b"three"]
    assert (calls.connects, calls.failures) == (1, [])


def test_the_reader_reports_kafka_unavailable_without_connecting():
    calls = Calls()
    thread = calls.read(f"127.0.0.1:{free_port()}", "any-topic", "latest")
    thread.join(60)
    assert not thread.is_alive()
    assert calls.connects == 0 and calls.records == []
    assert len(calls.failures) == 1 and isinstance(calls.failures[0], KafkaError | OSError)
