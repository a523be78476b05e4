"""The app's Kafka side: risk scores out to `stedi-events`, joined records in for the graph.

Both survive Kafka being down: scores wait in a bounded outbox and are retried,
the graph's consumer reconnects by itself, and `status` says what is wrong. The
output topic is at least once (a join restart rewrites its last micro-batch); the
graph shows each assessment once, by the records' `riskDate` header.
"""

from __future__ import annotations

import asyncio
import collections
import hashlib
import json
import logging
import threading
from collections.abc import Callable, Iterable

from kafka import KafkaConsumer, KafkaProducer
from kafka.consumer.fetcher import ConsumerRecord
from kafka.errors import KafkaError

from stedi.kafka_producer import close_within

log = logging.getLogger("stedi.app.kafka")
GRAPH_ROUND = 30  # the graph resets after this many points (one round of simulated customers)
OUTBOX_LIMIT = 100_000
BOOTSTRAP_TIMEOUT_MS = 5000  # say "Kafka unavailable" on the page within seconds, not 30
RECONNECT_SECONDS = 5
PUBLISH_RETRY_SECONDS = 5  # after a failed send, the outbox waits this long for Kafka
POLL_MS = 500  # how soon a reader sees that it is asked to stop
# How long the broker holds an idle reader's fetch: the fetch answers as soon as a record
# arrives, so this delays nothing; it only sets how often an idle reader asks again
# (kafka-python's 500 ms made two requests a second per reader at a trickle).
IDLE_FETCH_WAIT_MS = 5000
RISK_DATE_HEADER = "riskDate"  # on each joined record: the score's riskDate (docs/formats.md)
# The graph remembers this many assessments it showed, the oldest forgotten first. A join
# restart rewrites only its last micro-batch, so a repeat comes at most one batch after
# its first copy: this covers a batch of 100,000 scores (a backlog caught up at once), in
# about 15 MB (a 16-byte digest and its OrderedDict entry, ~150 bytes each).
SHOWN_LIMIT = 100_000


def read_topic(
    bootstrap_servers: str,
    topic: str,
    stop_event: threading.Event,
    *,
    offset_reset: str,
    on_connect: Callable[[], None],
    on_records: Callable[[list[ConsumerRecord]], None],
    on_unavailable: Callable[[Exception], None],
) -> None:
    """Reads `topic` (no consumer group) until `stop_event` is set; blocks, run it in a thread.

    Each poll's records go to `on_records` in one list, in order. When Kafka fails it calls
    `on_unavailable` and reconnects RECONNECT_SECONDS later; each connection reads again
    from `offset_reset` ("earliest" or "latest") after `on_connect`.
    """
    while not stop_event.is_set():
        consumer = None
        try:
            consumer = KafkaConsumer(
                topic,
                bootstrap_servers=bootstrap_servers,
                group_id=None,
                auto_offset_reset=offset_reset,
                enable_auto_commit=False,
                bootstrap_timeout_ms=BOOTSTRAP_TIMEOUT_MS,
                fetch_max_wait_ms=IDLE_FETCH_WAIT_MS,
            )
            on_connect()
            while not stop_event.is_set():
                polled = consumer.poll(timeout_ms=POLL_MS).values()
                if records := [record for partition in polled for record in partition]:
                    on_records(records)
        except (KafkaError, OSError) as exc:
            on_unavailable(exc)
            stop_event.wait(RECONNECT_SECONDS)
        finally:
            if consumer is not None:
                consumer.close()


class RiskPublisher:
    """Publishes risk scores; keeps them in order in an outbox while Kafka is unavailable."""

    def __init__(self, bootstrap_servers: str, topic: str):
        self.bootstrap_servers, self.topic = bootstrap_servers, topic
        self.outbox: collections.deque[tuple[bytes, bytes]] = collections.deque(maxlen=OUTBOX_LIMIT)
        self.producer: KafkaProducer | None = None
        self.error: str | None = None
        self.wakeup = asyncio.Event()
        self.flushing = threading.Lock()
        # Totals for /metrics: scores Kafka confirmed, and sends that failed (each is retried).
        self.published = 0
        self.failed_sends = 0

    def publish(self, key: bytes, value: bytes) -> None:
        self.outbox.append((key, value))
        self.wakeup.set()

    def _flush_outbox(self) -> None:
        with self.flushing:  # one flush at a time: two would send the outbox's head twice
            self._send_outbox()

    def _send_outbox(self) -> None:
        while self.outbox:
            key, value = self.outbox[0]
            self._send(key, value)
            self.outbox.popleft()
            self.published += 1

    def _send(self, key: bytes, value: bytes) -> None:
        """One score to Kafka, confirmed (acks=all) before it returns."""
        if self.producer is None:
            self.producer = KafkaProducer(
                bootstrap_servers=self.bootstrap_servers,
                acks="all",
                enable_idempotence=True,
                max_block_ms=5000,
                bootstrap_timeout_ms=BOOTSTRAP_TIMEOUT_MS,
            )
        self.producer.send(self.topic, key=key, value=value).get(timeout=10)

    async def run(self) -> None:
        while True:
            try:
                # Cleared before the flush: a score published during it sets it again,
                # so it is never left waiting in the outbox for the next one.
                self.wakeup.clear()
                await asyncio.to_thread(self._flush_outbox)
                self.error = None
                await self.wakeup.wait()
            except (KafkaError, OSError) as exc:
                self.failed_sends += 1
                waiting = len(self.outbox)
                self.error = f"Kafka unavailable ({type(exc).__name__}); {waiting} scores waiting"
                log.warning("%s: retrying in %d s", self.error, PUBLISH_RETRY_SECONDS)
                await asyncio.to_thread(self._drop_producer)
                await asyncio.sleep(PUBLISH_RETRY_SECONDS)

    def _drop_producer(self) -> None:
        """Closes the failed producer without raising (an exception here would end `run`,
        and no score would be published after it); the next one sends the outbox's head."""
        producer, self.producer = self.producer, None
        if producer is not None:
            close_within(producer, 1, log)

    def close(self) -> None:
        """Sends what still waits in the outbox (when Kafka answers), then closes."""
        try:
            self._flush_outbox()
        except (KafkaError, OSError) as exc:
            log.warning("%d risk scores not sent at shutdown: %s", len(self.outbox), exc)
        if self.producer is not None:
            self.producer.close(timeout=5)


class Stream:
    """One browser's live graph: the points for it, and whether the server ended it."""

    def __init__(self, session: str, size: int):
        self.session = session
        self.queue: asyncio.Queue[dict | None] = asyncio.Queue(maxsize=size + 1)
        self.size = size

    def offer(self, point: dict) -> bool:
        """Queues the point; False when the browser is too far behind to catch up."""
        if self.queue.qsize() >= self.size:
            return False
        self.queue.put_nowait(point)
        return True

    def end(self) -> None:
        """Ends the stream at once, dropping what it had not sent: the browser reconnects."""
        while not self.queue.empty():
            self.queue.get_nowait()
        self.queue.put_nowait(None)

    async def next(self, timeout: float) -> dict | None:
        """The next point; None once the stream is ended; TimeoutError after `timeout` s."""
        return await asyncio.wait_for(self.queue.get(), timeout)


def graph_point(value: bytes | None) -> dict | None:
    """A graph point from an output record, or None for a record without both fields.

    Birth year and score only: the graph is team-wide and shows no contact details.
    """
    try:
        record = json.loads(value)
        point = {"birthYear": int(record["birthYear"]), "score": float(record["score"])}
    except (TypeError, ValueError, KeyError):
        return None
    return point


class ShownAssessments:
    """The last `limit` assessments the graph showed, oldest forgotten first."""

    def __init__(self, limit: int = SHOWN_LIMIT):
        self.limit = limit
        self.digests: collections.OrderedDict[bytes, None] = collections.OrderedDict()

    def first_showing(self, assessment: tuple) -> bool:
        """True, and remembered, unless `assessment` is among the last `limit` shown."""
        # A digest, not the texts: about half the memory; 128 bits do not collide here.
        digest = hashlib.blake2b(repr(assessment).encode(), digest_size=16).digest()
        if digest in self.digests:
            return False
        self.digests[digest] = None
        if len(self.digests) > self.limit:
            self.digests.popitem(last=False)
        return True

    def __len__(self) -> int:
        return len(self.digests)


Headers = list[tuple[str, bytes]]


def new_points(
    records: Iterable[tuple[bytes | None, bytes | None, Headers]], shown: ShownAssessments
) -> list[dict]:
    """The graph points of one poll's records (key, value, headers), each assessment once.

    An assessment is the record's key (the email), its `riskDate` header and its score:
    a join restart rewrites its last micro-batch byte for byte, and those repeats are
    dropped here. Records without the header (from an older join) are always points.
    """
    points = []
    for key, value, headers in records:
        point = graph_point(value)
        if point is None:
            continue
        risk_date = dict(headers or ()).get(RISK_DATE_HEADER)
        if risk_date is None or shown.first_showing((key, risk_date, point["score"])):
            points.append(point)
    return points


class RiskFeed:
    """Reads the output topic in a thread and fans the points out to the graph's streams."""

    def __init__(self, bootstrap_servers: str, topic: str, stream_buffer: int = 1000):
        self.bootstrap_servers, self.topic = bootstrap_servers, topic
        self.stream_buffer = stream_buffer
        self.points: list[dict] = []  # the current round, for streams that join late
        self.shown = ShownAssessments()  # only the reader's thread uses it
        self.streams: set[Stream] = set()
        self.error: str | None = None
        self.stop_event = threading.Event()
        self.loop: asyncio.AbstractEventLoop | None = None

    def start(self) -> None:
        self.loop = asyncio.get_running_loop()
        threading.Thread(target=self._consume, name="risk-feed", daemon=True).start()

    def subscribe(self, session: str) -> Stream:
        stream = Stream(session, self.stream_buffer)
        self.streams.add(stream)
        return stream

    def unsubscribe(self, stream: Stream) -> None:
        self.streams.discard(stream)

    def end_session(self, session: str) -> None:
        """Ends every stream of a login session (logout)."""
        for stream in [s for s in self.streams if s.session == session]:
            self.streams.discard(stream)
            stream.end()

    def _deliver(self, point: dict) -> None:
        """On the event loop: keep the round, reset it after GRAPH_ROUND points, fan out."""
        if len(self.points) >= GRAPH_ROUND:
            self.points = []
        self.points.append(point)
        for stream in list(self.streams):
            if not stream.offer(point):  # a stalled browser: end its stream, it reconnects
                self.streams.discard(stream)
                stream.end()
                log.info("ended a live graph stream that fell behind: the browser reconnects")

    def _consume(self) -> None:
        read_topic(
            self.bootstrap_servers,
            self.topic,
            self.stop_event,
            offset_reset="latest",
            on_connect=self._connected,
            on_records=self._received,
            on_unavailable=self._unavailable,
        )

    def _connected(self) -> None:
        self.error = None

    def _received(self, records: list[ConsumerRecord]) -> None:
        triples = [(r.key, r.value, r.headers) for r in records]
        for point in new_points(triples, self.shown):
            self.loop.call_soon_threadsafe(self._deliver, point)

    def _unavailable(self, exc: Exception) -> None:
        self.error = f"graph feed: Kafka unavailable ({type(exc).__name__})"
        log.warning("%s: retrying in %d s", self.error, RECONNECT_SECONDS)

    def close(self) -> None:
        self.stop_event.set()
