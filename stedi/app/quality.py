"""How many of the app's scores Spark checked, and how many agreed: the graph page's line.

sparkpyriskscore.py writes one record per score it computed to the quality topic
(STEDI_RISK_QUALITY_TOPIC, default `risk-quality`), with `agree: true|false`.
A thread reads that topic from its beginning and keeps two counters.
"""

from __future__ import annotations

import json
import logging
import threading
from dataclasses import dataclass

from kafka import KafkaConsumer
from kafka.errors import KafkaError

log = logging.getLogger("stedi.app.quality")
BOOTSTRAP_TIMEOUT_MS = 5000


@dataclass
class QualityCounts:
    checked: int = 0
    agreeing: int = 0

    def add(self, value: bytes | None) -> None:
        """Counts one quality record; a record that is no check is ignored."""
        try:
            agree = json.loads(value)["agree"]
        except (TypeError, ValueError, KeyError):
            return
        if isinstance(agree, bool):
            self.checked += 1
            self.agreeing += agree

    def line(self) -> str:
        return f"scores checked: {self.checked}, agreeing: {self.agreeing}"


class RiskQuality:
    """Counts the quality topic's checks in a daemon thread; reconnects when Kafka is away."""

    def __init__(self, bootstrap_servers: str, topic: str):
        self.bootstrap_servers, self.topic = bootstrap_servers, topic
        self.counts = QualityCounts()
        self.stop_event = threading.Event()

    def start(self) -> None:
        threading.Thread(target=self._consume, name="risk-quality", daemon=True).start()

    def line(self) -> str:
        return self.counts.line()

    def _consume(self) -> None:
        while not self.stop_event.is_set():
            consumer = None
            try:
                consumer = KafkaConsumer(
                    self.topic,
                    bootstrap_servers=self.bootstrap_servers,
                    group_id=None,
                    auto_offset_reset="earliest",
                    enable_auto_commit=False,
                    bootstrap_timeout_ms=BOOTSTRAP_TIMEOUT_MS,
                )
                counts = QualityCounts()  # a reconnect reads from the beginning again
                self.counts = counts
                while not self.stop_event.is_set():
                    for records in consumer.poll(timeout_ms=500).values():
                        for record in records:
                            counts.add(record.value)
            except (KafkaError, OSError) as exc:
                log.warning("quality feed: Kafka unavailable (%s): retrying in 5 s", exc)
                self.stop_event.wait(5)
            finally:
                if consumer is not None:
                    consumer.close()

    def close(self) -> None:
        self.stop_event.set()
