"""The app's score publisher after a broker dies with a send in flight (issue 36): the
failed producer's close times out, and the scores still go out, by a new producer."""

import asyncio
from typing import ClassVar

from kafka.errors import KafkaTimeoutError

from stedi.app import kafka_io


class Future:
    def __init__(self, error: Exception | None):
        self.error = error

    def get(self, timeout):
        if self.error is not None:
            raise self.error


class Sender:
    def __init__(self):
        self.forced = False

    def force_close(self):
        self.forced = True

    def join(self, timeout):
        pass


class Producer:
    """The first one made fails every send and cannot flush at close, as kafka-python's
    producer after its leader's broker died; the later ones deliver."""

    made: ClassVar[list["Producer"]] = []

    def __init__(self, **options):
        self.broken = not Producer.made
        self.sent: list[bytes] = []
        self._sender = Sender()
        Producer.made.append(self)

    def send(self, topic, key, value):
        if self.broken:
            return Future(KafkaTimeoutError("no answer from the partition's leader"))
        self.sent.append(value)
        return Future(None)

    def close(self, timeout=None):
        if self.broken and timeout:
            raise KafkaTimeoutError(f"Failed to flush buffered records within {timeout} secs")


def test_scores_are_published_after_a_failed_producer_that_cannot_close_in_time(monkeypatch):
    monkeypatch.setattr(kafka_io, "KafkaProducer", Producer)
    monkeypatch.setattr(kafka_io, "PUBLISH_RETRY_SECONDS", 0.01)
    Producer.made = []

    async def scenario():
        publisher = kafka_io.RiskPublisher("kafka.invalid:9092", "stedi-events")
        task = asyncio.create_task(publisher.run())
        publisher.publish(b"ann@test.com", b"first")
        for _ in range(500):
            if len(Producer.made) == 2 and Producer.made[1].sent:
                break
            await asyncio.sleep(0.01)
        publisher.publish(b"ann@test.com", b"second")  # the publisher still runs
        for _ in range(500):
            if len(Producer.made[-1].sent) == 2:
                break
            await asyncio.sleep(0.01)
        assert not task.done(), task.exception() if task.done() else None
        task.cancel()
        return publisher

    publisher = asyncio.run(scenario())
    failed, working = Producer.made
    assert failed._sender.forced  # closed without waiting on the dead broker
    assert working.sent == [b"first", b"second"]
    assert publisher.failed_sends == 1 and publisher.published == 2
    assert publisher.outbox == type(publisher.outbox)()
