"""Faults under the running join (issue 10, faults 1 and 2): nothing lost, nothing stuck.

Each test counts what went in and what came out of a join started through its
wrapper as a stream: every score produced is joined at least once; a repeat
can only come from a micro-batch replayed after the fault. The app's graph,
reading the same output topic, shows each of those assessments once (issue 22).
"""

import collections
import contextlib
import json
import os
import signal
import subprocess
import threading
import time
from datetime import datetime, timedelta, timezone

import httpx
import pytest
from kafka import KafkaProducer

from stedi.stack import services
from tests.app_server import AppServer, logged_in
from tests.records import customer, customer_record, risk_record
from tests.stack_support import TopicReader, produce

pytestmark = [pytest.mark.integration, pytest.mark.slow]

CUSTOMERS = [customer(f"Cust {i}", f"cust{i}@test.com", f"{1940 + i}-01-01") for i in range(20)]


class JoinJob:
    """./submit-join.sh as a stream in its own process group, logging to a file."""

    def __init__(self, env, log_path):
        self.env, self.log_path = env, log_path
        self.proc = None

    def start(self):
        with open(self.log_path, "ab") as log:
            self.proc = subprocess.Popen(
                [str(services.ROOT / "submit-join.sh")],
                env={**os.environ, **self.env, "STEDI_SUBMIT": "local"},
                stdout=log,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                start_new_session=True,
            )

    def signal(self, sig):
        try:
            os.killpg(self.proc.pid, sig)
        except ProcessLookupError:
            pass
        self.proc.wait(timeout=120)

    def log(self):
        return self.log_path.read_text(errors="replace")[-4000:]

    def restarts(self) -> int:
        """How often the wrapper has restarted its failed driver so far."""
        return self.log_path.read_text(errors="replace").count("failed, restarting in")


def score_of(i):
    return float(i) + 0.25  # every score unique, so outputs can be counted


def risk_date_of(i):
    """Each score its own assessment: a riskDate a minute after the previous one's."""
    moment = datetime(2026, 1, 1, tzinfo=timezone.utc) + timedelta(minutes=i)
    return moment.isoformat(timespec="milliseconds").replace("+00:00", "Z")


def produce_scores(stack, topic, numbers, per_second=10):
    for i in numbers:
        email = CUSTOMERS[i % len(CUSTOMERS)]["email"]
        produce(stack, topic, [risk_record(email, score_of(i), risk_date_of(i))])
        time.sleep(1 / per_second)


class GraphPoints:
    """The points the real app's live graph stream (/api/risk-stream) sends, as a browser
    gets them, read in a thread until the stream ends."""

    def __init__(self, app):
        self.client, self.token = logged_in(app)
        self.points: list[dict] = []
        self.thread = threading.Thread(target=self._read, daemon=True)
        self.thread.start()

    def _read(self):
        try:
            with self.client.stream("GET", "/api/risk-stream", timeout=60) as stream:
                event = None
                for line in stream.iter_lines():
                    if line.startswith("event: "):
                        event = line.removeprefix("event: ")
                    elif line.startswith("data: ") and event == "point":
                        self.points.append(json.loads(line.removeprefix("data: ")))
        except httpx.HTTPError:
            pass  # the app went away: the test's assertions say what was missed

    def scores(self, expected, timeout):
        """The points' scores, once every expected score is among them or `timeout` passed."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline and not {p["score"] for p in self.points} >= expected:
            time.sleep(0.2)
        return [p["score"] for p in self.points]

    def close(self):
        try:
            self.client.post("/logout", data={"csrf": self.token})  # ends the stream
        except httpx.HTTPError:
            pass  # the app is gone, and the stream with it
        self.thread.join(30)
        self.client.close()


def write_again(stack, topic, records):
    """Writes consumed records again, key, value and headers, as a rewritten batch does."""
    producer = KafkaProducer(bootstrap_servers=stack.kafka_bootstrap_servers)
    for r in records:
        producer.send(topic, key=r.key, value=r.value, headers=r.headers)
    producer.flush()
    producer.close()


def scores_read(reader, expected, timeout):
    records = reader.read(
        lambda rs: {json.loads(r.value)["score"] for r in rs} >= expected, timeout=timeout
    )
    return [json.loads(r.value)["score"] for r in records]


def test_a_join_killed_mid_stream_and_restarted_joins_every_score_and_the_graph_shows_each_once(
    stack, topics, tmp_path
):
    with contextlib.ExitStack() as cleanup:  # stops what started, last first
        reader = TopicReader(stack, topics["KAFKA_RISK_TOPIC"])
        cleanup.callback(reader.close)
        produce(stack, topics["STEDI_REDIS_TOPIC"], [customer_record(*CUSTOMERS)])
        app = AppServer({"KAFKA_RISK_TOPIC": topics["KAFKA_RISK_TOPIC"]}, tmp_path / "app.log")
        cleanup.callback(app.stop)
        graph = GraphPoints(app)  # reads the topic from its end, before the join writes
        cleanup.callback(graph.close)
        job = JoinJob(topics, tmp_path / "join.log")
        job.start()
        cleanup.callback(job.signal, signal.SIGTERM)

        first = set(map(score_of, range(100)))
        feeder = threading.Thread(
            target=produce_scores, args=(stack, topics["STEDI_EVENTS_TOPIC"], range(100))
        )
        feeder.start()
        seen = reader.read(lambda rs: len(rs) >= 10, timeout=300)  # mid-stream
        assert len(seen) >= 10, job.log()
        job.signal(signal.SIGKILL)
        feeder.join()
        job.start()
        more = set(map(score_of, range(100, 150)))
        produce_scores(stack, topics["STEDI_EVENTS_TOPIC"], range(100, 150), per_second=50)
        unseen = (first | more) - {json.loads(r.value)["score"] for r in seen}
        records = seen + reader.read(
            lambda rs: {json.loads(r.value)["score"] for r in rs} >= unseen, timeout=300
        )
        scores = [json.loads(r.value)["score"] for r in records]
        assert set(scores) == first | more, job.log()
        # Repeats come only from a replayed micro-batch: at most once more each.
        assert max(scores.count(s) for s in set(scores)) <= 2
        repeats = len(scores) - len(set(scores))  # on the topic: allowed (at least once)

        # The first records again, as another rewritten batch would write them (so the graph
        # meets repeats even when the kill left none), then one new assessment: once its
        # point is shown, every repeat before it was read.
        new_score = -1.25
        value = json.loads(records[-1].value) | {"score": new_score}
        new = records[-1]._replace(
            value=json.dumps(value, separators=(",", ":")).encode(),
            headers=[("riskDate", risk_date_of(1000).encode())],
        )
        write_again(stack, topics["KAFKA_RISK_TOPIC"], [*records[:10], new])
        shown = graph.scores(first | more | {new_score}, timeout=60)
        assert set(shown) == first | more | {new_score}, app.process.tail()
        twice = [s for s, n in collections.Counter(shown).items() if n > 1]
        assert twice == [], f"{repeats} repeats on the topic; points shown twice: {twice}"


# The join's Kafka clients give up after this long (STEDI_KAFKA_TIMEOUT_MS), so an outage
# longer than they wait takes seconds here, not Kafka's default minute or two.
CLIENT_TIMEOUT_MS = 4000


def test_the_join_recovers_by_itself_after_the_broker_was_down_longer_than_its_clients_wait(
    stack, topics, tmp_path
):
    reader = TopicReader(stack, topics["KAFKA_RISK_TOPIC"])
    produce(stack, topics["STEDI_REDIS_TOPIC"], [customer_record(*CUSTOMERS)])
    job = JoinJob(
        {**topics, "STEDI_KAFKA_TIMEOUT_MS": str(CLIENT_TIMEOUT_MS)}, tmp_path / "join.log"
    )
    job.start()
    try:
        before = set(map(score_of, range(20)))
        produce_scores(stack, topics["STEDI_EVENTS_TOPIC"], range(20), per_second=50)
        assert set(scores_read(reader, before, timeout=300)) == before, job.log()

        services.KAFKA.stop()
        # Down until the query itself has failed on it (its clients gave up) and the
        # wrapper has restarted its driver into the outage at least once.
        deadline = time.monotonic() + 300
        while job.restarts() < 2 and time.monotonic() < deadline:
            assert job.proc.poll() is None, job.log()
            time.sleep(0.5)
        assert job.restarts() >= 2, job.log()
        services.start_kafka(stack)
        back = time.monotonic()
        after = set(map(score_of, range(20, 40)))
        produce_scores(stack, topics["STEDI_EVENTS_TOPIC"], range(20, 40), per_second=50)
        recovered = scores_read(reader, after, timeout=60 - (time.monotonic() - back))
        assert set(recovered) >= after, job.log()
        assert job.proc.poll() is None, job.log()  # it recovered, it did not exit
    finally:
        job.signal(signal.SIGTERM)
        reader.close()
        if services.KAFKA.pid() is None:
            services.start_kafka(stack)
