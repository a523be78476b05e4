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

from stedi.app.kafka_io import RECONNECT_SECONDS, read_topic

log = logging.getLogger("stedi.app.quality")


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
        read_topic(
            self.bootstrap_servers,
            self.topic,
            self.stop_event,
            offset_reset="earliest",
            on_connect=self._connected,
            on_records=self._received,
            on_unavailable=self._unavailable,
        )

    def _received(self, records: list) -> None:
        for record in records:
            self.counts.add(record.value)

    def _connected(self) -> None:
        self.counts = QualityCounts()  # a reconnect reads from the beginning again

    def _unavailable(self, exc: Exception) -> None:
        log.warning(
            "quality feed: Kafka unavailable (%s): retrying in %d s", exc, RECONNECT_SECONDS
        )

    def close(self) -> None:
        self.stop_event.set()
