"""Fresh, unique Kafka topics for one bench run, and small reads of them."""

from __future__ import annotations

import uuid

from kafka import KafkaAdminClient, KafkaConsumer, TopicPartition
from kafka.admin import NewTopic

from stedi.config import Settings


class Topics:
    """Topics named `bench-<role>-<run id>`; `delete_all` removes every one it made."""

    def __init__(self, settings: Settings):
        self.settings = settings
        self.run_id = uuid.uuid4().hex[:8]
        self.created: list[str] = []

    def create(self, role: str, **configs: str) -> str:
        name = f"bench-{role}-{self.run_id}"
        admin = KafkaAdminClient(bootstrap_servers=self.settings.kafka_bootstrap_servers)
        try:
            admin.create_topics([NewTopic(name, 1, 1, topic_configs=configs)])
        finally:
            admin.close()
        self.created.append(name)
        return name

    def adopt(self, name: str) -> None:
        """A topic a tool created itself, to delete with the others."""
        self.created.append(name)

    def delete_all(self) -> None:
        if not self.created:
            return
        admin = KafkaAdminClient(bootstrap_servers=self.settings.kafka_bootstrap_servers)
        try:
            existing = set(admin.list_topics())
            doomed = [t for t in self.created if t in existing]
            if doomed:
                admin.delete_topics(doomed)
        finally:
            admin.close()
        self.created = []


def consumer(settings: Settings) -> KafkaConsumer:
    return KafkaConsumer(
        bootstrap_servers=settings.kafka_bootstrap_servers, group_id=None, enable_auto_commit=False
    )


class RecordCounter:
    """Counts a one-partition topic's records again and again through one consumer."""

    def __init__(self, settings: Settings, topic: str):
        self._consumer = consumer(settings)
        self._tp = TopicPartition(topic, 0)

    def count(self) -> int:
        return self._consumer.end_offsets([self._tp])[self._tp]

    def close(self) -> None:
        self._consumer.close()


def record_count(settings: Settings, topic: str) -> int:
    """Records in a one-partition topic (its end offset; the bench's topics never expire)."""
    c = consumer(settings)
    try:
        tp = TopicPartition(topic, 0)
        return c.end_offsets([tp])[tp]
    finally:
        c.close()


def read_every_record(settings: Settings, topic: str) -> list:
    """Every record now in a one-partition topic."""
    c = consumer(settings)
    try:
        tp = TopicPartition(topic, 0)
        end = c.end_offsets([tp])[tp]
        c.assign([tp])
        c.seek_to_beginning(tp)
        records: list = []
        while c.position(tp) < end:
            for batch in c.poll(timeout_ms=1000, max_records=10_000).values():
                records.extend(batch)
        return records
    finally:
        c.close()
