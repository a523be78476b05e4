"""sparkpyriskscore.py on static micro-batches: the scores of hand-made histories.

Each micro-batch is a parquet file of Kafka-shaped rows read by a streaming file
source, one file per batch, so the real state function runs with real state.
The expected scores come from the app's own model (stedi.app.risk), plus a few
literal values that pin HALF_UP and -0.0.
"""

from __future__ import annotations

import json
import math
import os
import sys
from datetime import datetime
from types import SimpleNamespace

import pytest

import sparkpyriskscore as job
from stedi.app.quality import QualityCounts
from stedi.app.risk import StepTest, iso_millis, risk_score
from tests.records import (
    KAFKA_SOURCE_SCHEMA,
    customer,
    step_test_json,
    step_test_record,
    zadd_record,
)

# The Python workers of applyInPandasWithState need this venv's pandas and pyarrow.
os.environ.setdefault("PYSPARK_PYTHON", sys.executable)


SETTINGS = SimpleNamespace(  # the job's default topics
    redis_topic="redis-server",
    events_topic="stedi-events",
    spark_risk_topic="stedi-risk-spark",
    quality_topic="risk-quality",
    dead_letter_topic="stedi-dead-letter",
)

T0 = 1_700_000_000_000  # stop times are epoch ms


def person(name: str) -> dict:
    return customer(name, f"{name}@test.com", "1955-01-01")


def history(durations_s: list[float], start: int = T0) -> list[tuple[int, int]]:
    """(stop ms, duration ms) of tests one minute apart."""
    return [(start + 60_000 * i, round(d * 1000)) for i, d in enumerate(durations_s)]


class Stream:
    """Micro-batches in, the job's Kafka records out (topic, key, value)."""

    def __init__(self, spark, tmp_path, ttl: str = "400 days"):
        self.spark, self.tmp = spark, tmp_path
        self.ttl_ms = job.interval_ms(spark, ttl, "STEDI_SCORE_STATE_TTL")
        self.checkpoint_dir = str(tmp_path / "cp")
        self.offsets = {SETTINGS.redis_topic: 0, SETTINGS.events_topic: 0}
        self.batches = 0
        self.records: list[tuple[str, str, dict | str]] = []
        self.progress: list[dict] = []

    def run(self, values: list[tuple[str, str]]) -> list[tuple[str, str, dict]]:
        """One micro-batch of (topic, value) -> the records it produced, value parsed."""
        rows: dict[str, list] = {topic: [] for topic in self.offsets}
        for topic, value in values:
            offset = self.offsets[topic]
            rows[topic].append((None, value.encode(), topic, 0, offset, datetime(2026, 1, 1)))
            self.offsets[topic] += 1
        for topic, topic_rows in rows.items():  # one folder per topic, as one source each
            inbox = self.tmp / "in" / topic
            inbox.mkdir(parents=True, exist_ok=True)
            if topic_rows:
                stage = self.tmp / f"stage-{self.batches}-{topic}"
                frame = self.spark.createDataFrame(topic_rows, KAFKA_SOURCE_SCHEMA)
                frame.coalesce(1).write.parquet(str(stage))
                [part] = stage.glob("part-*.parquet")
                part.rename(inbox / f"batch-{self.batches:04d}.parquet")  # one new file per batch
        self.batches += 1
        tests, events = (
            self.spark.readStream.schema(KAFKA_SOURCE_SCHEMA).parquet(str(self.tmp / "in" / topic))
            for topic in (SETTINGS.redis_topic, SETTINGS.events_topic)
        )
        out: list = []
        query = (
            job.risk_score(tests, events, self.ttl_ms)
            .writeStream.foreachBatch(lambda frame, _: out.extend(frame.collect()))
            .option("checkpointLocation", self.checkpoint_dir)
            .trigger(availableNow=True)
            .start()
        )
        query.awaitTermination()
        assert query.exception() is None
        self.progress.extend(query.recentProgress)
        parsed = [(r.topic, r.key, json.loads(r.value)) for r in out]
        self.records.extend(parsed)
        return parsed

    def state(self) -> dict[str, dict]:
        """The state held per customer, read back from the checkpoint."""
        frame = self.spark.read.format("statestore").load(self.checkpoint_dir)
        held = {}
        for row in frame.collect():
            # the state row's struct layout is Spark's; our JSON is its one text field
            [text] = [v for v in _leaves(row.value.asDict(recursive=True)) if str(v)[:1] == "{"]
            [email] = [v for v in _leaves(row.key.asDict(recursive=True)) if "@" in str(v)]
            held[email] = json.loads(text)
        return held


def _leaves(value):
    if isinstance(value, dict):
        for inner in value.values():
            yield from _leaves(inner)
    else:
        yield value


def step_test_records(who: dict, tests: list[tuple[int, int]]) -> list[tuple[str, str]]:
    return [(SETTINGS.redis_topic, step_test_record(who, *t)) for t in tests]


def app_event(who: dict, score: float, stop_ms: int) -> tuple[str, str]:
    value = {"customer": who["email"], "score": score, "riskDate": iso_millis(stop_ms)}
    return SETTINGS.events_topic, json.dumps(value)


def scores_of(records, email: str) -> list[dict]:
    return [v for t, _, v in records if t == SETTINGS.spark_risk_topic and v["customer"] == email]


def app_model(tests: list[tuple[int, int]]) -> list[dict]:
    """The app's score after each test, in arrival order (None before the fourth)."""
    out = []
    for n in range(1, len(tests) + 1):
        risk = risk_score(StepTest(*t) for t in tests[:n])
        if risk is not None:
            out.append({"score": risk.score, "riskDate": iso_millis(risk.risk_date_ms)})
    return out


# --- one micro-batch: hand-made histories ----------------------------------------------------
FEW = person("Few.Tests")
FOUR = person("Exactly.Four")
UP = person("Half.Up")
DOWN = person("Half.Down")
ZERO = person("Negative.Zero")
SHUFFLED = person("Out.Of.Order")
LATE = person("Late.Test")

# (a+b-c-d)/2000 s with a+b-c-d = 2010 ms: 1.005 s, HALF_UP 1.01 (float round gives 1.0).
HALF_UP_TESTS = [(T0, 61_005), (T0 + 1, 61_005), (T0 + 2, 60_000), (T0 + 3, 60_000)]
HALF_DOWN_TESTS = [(T0, 60_000), (T0 + 1, 60_000), (T0 + 2, 61_005), (T0 + 3, 61_005)]
# a+b-c-d = -8 ms: -0.004 s rounds to zero, written 0.0, never -0.0.
ZERO_TESTS = [(T0, 60_000), (T0 + 1, 60_000), (T0 + 2, 60_004), (T0 + 3, 60_004)]
SHUFFLED_TESTS = [history([70, 80, 95, 61, 100, 66])[i] for i in (2, 0, 5, 1, 4, 3)]
# Five tests in order, then one older than all of them: no new score.
LATE_TESTS = [*history([70, 80, 95, 61, 100], start=T0 + 60_000), (T0, 90_000)]


@pytest.fixture(scope="module")
def one_batch(spark, tmp_path_factory):
    stream = Stream(spark, tmp_path_factory.mktemp("one-batch"))
    bad_and_good = zadd_record(
        "RapidStepTest",
        "not json",
        json.dumps({"stopTime": T0, "testTime": 60_000, "customer": {}}),
        json.dumps({"stopTime": T0, "customer": FOUR}),
        step_test_json(FEW, T0 + 10 * 60_000, 75_000),
    )
    values = [
        *step_test_records(FEW, history([70, 80])),
        (SETTINGS.redis_topic, bad_and_good),
        *step_test_records(FOUR, history([70, 80, 95, 61])),
        *step_test_records(UP, HALF_UP_TESTS),
        *step_test_records(DOWN, HALF_DOWN_TESTS),
        *step_test_records(ZERO, ZERO_TESTS),
        *step_test_records(SHUFFLED, SHUFFLED_TESTS),
        *step_test_records(LATE, LATE_TESTS),
        (SETTINGS.redis_topic, zadd_record("Customer", json.dumps(FOUR))),
    ]
    stream.run(values)
    return stream


def test_fewer_than_four_tests_give_no_score(one_batch):
    assert scores_of(one_batch.records, FEW["email"]) == []


def test_exactly_four_tests_give_the_apps_score(one_batch):
    tests = history([70, 80, 95, 61])
    assert scores_of(one_batch.records, FOUR["email"]) == [
        {"customer": FOUR["email"], **s} for s in app_model(tests)
    ]
    # (70 + 80) / 2 - (95 + 61) / 2 = -3.0 s; riskDate = stop time of the fourth test
    assert scores_of(one_batch.records, FOUR["email"])[0]["score"] == -3.0
    assert scores_of(one_batch.records, FOUR["email"])[0]["riskDate"] == iso_millis(tests[3][0])


def test_half_a_cent_rounds_away_from_zero(one_batch):
    assert [s["score"] for s in scores_of(one_batch.records, UP["email"])] == [1.01]
    assert [s["score"] for s in scores_of(one_batch.records, DOWN["email"])] == [-1.01]
    assert app_model(HALF_UP_TESTS)[0]["score"] == 1.01


def test_a_score_that_rounds_to_zero_is_never_negative_zero(one_batch):
    [record] = scores_of(one_batch.records, ZERO["email"])
    assert record["score"] == 0.0 and math.copysign(1.0, record["score"]) == 1.0
    raw = [v for t, _, v in one_batch.records if t == SETTINGS.spark_risk_topic]
    assert all(v["score"] != 0 or math.copysign(1.0, v["score"]) == 1.0 for v in raw)


def test_tests_arriving_out_of_order_are_ordered_by_stop_time(one_batch):
    got = scores_of(one_batch.records, SHUFFLED["email"])
    assert [{"score": s["score"], "riskDate": s["riskDate"]} for s in got] == app_model(
        SHUFFLED_TESTS
    )
    final = risk_score(StepTest(*t) for t in SHUFFLED_TESTS)
    assert got[-1]["score"] == final.score
    assert got[-1]["riskDate"] == iso_millis(max(stop for stop, _ in SHUFFLED_TESTS))


def test_a_late_test_older_than_the_four_held_gives_no_new_score(one_batch):
    got = scores_of(one_batch.records, LATE["email"])
    assert [{"score": s["score"], "riskDate": s["riskDate"]} for s in got] == app_model(
        LATE_TESTS[:5]
    )


def test_spark_risk_records_have_the_stedi_events_format(one_batch):
    records = [(k, v) for t, k, v in one_batch.records if t == SETTINGS.spark_risk_topic]
    assert records
    for key, value in records:
        assert key.isdigit() and len(key) == 13  # publish time, epoch ms
        assert list(value) == ["customer", "score", "riskDate"]
        assert datetime.strptime(value["riskDate"], "%Y-%m-%dT%H:%M:%S.%f%z")
        assert value["riskDate"].endswith("Z") and len(value["riskDate"]) == 24


def test_malformed_tests_are_dead_letters_and_their_neighbours_still_count(one_batch):
    letters = [v for t, _, v in one_batch.records if t == SETTINGS.dead_letter_topic]
    assert sorted((v["member"], v["reason"]) for v in letters) == [
        (0, "member is not a JSON object"),
        (1, "step test has no customer email"),
        (2, "step test has no positive integer testTime"),
    ]
    assert {v["sourceTopic"] for v in letters} == {SETTINGS.redis_topic}
    # the good fourth member of that ZADD was FEW's third test: still not four
    assert scores_of(one_batch.records, FEW["email"]) == []


def test_other_keys_are_neither_scores_nor_dead_letters(one_batch):
    letters = [v for t, _, v in one_batch.records if t == SETTINGS.dead_letter_topic]
    assert all("Q3VzdG9tZXI" not in v["value"] for v in letters)  # the Customer ZADD


# --- several micro-batches: state, matching with the app, bounded state -----------------------
AGREE = person("Agreeing.Customer")
DISAGREE = person("Disagreeing.Customer")
BUSY = person("Thousand.Tests")


@pytest.fixture(scope="module")
def batches(spark, tmp_path_factory):
    stream = Stream(spark, tmp_path_factory.mktemp("batches"))
    agree_tests = history([70, 80, 95, 61, 100])
    disagree_tests = history([90, 90, 90, 91])
    busy_tests = history([61 + (i * 37) % 60 for i in range(1000)])
    # batch 1: four tests of AGREE, DISAGREE's app score before its tests, 600 tests of BUSY
    stream.run(
        [
            *step_test_records(AGREE, agree_tests[:4]),
            app_event(DISAGREE, 99.0, disagree_tests[3][0]),
            *step_test_records(BUSY, busy_tests[:600]),
        ]
    )
    # batch 2: the app's scores of AGREE, its fifth test arriving late, DISAGREE's tests,
    # the rest of BUSY
    app_scores = app_model(agree_tests)
    stream.run(
        [
            *[
                app_event(AGREE, s["score"], agree_tests[3 + i][0])
                for i, s in enumerate(app_scores)
            ],
            *step_test_records(AGREE, agree_tests[4:]),
            *step_test_records(DISAGREE, disagree_tests),
            *step_test_records(BUSY, busy_tests[600:]),
        ]
    )
    stream.busy_tests = busy_tests
    return stream


def quality_of(records, email: str) -> list[dict]:
    return [v for t, _, v in records if t == SETTINGS.quality_topic and v["customer"] == email]


def test_a_score_matching_the_apps_is_checked_as_agreeing(batches):
    checks = quality_of(batches.records, AGREE["email"])
    scores = scores_of(batches.records, AGREE["email"])
    assert len(checks) == len(scores) == 2
    assert all(c["agree"] is True and c["sparkScore"] == c["appScore"] for c in checks)
    assert sorted(c["riskDate"] for c in checks) == sorted(s["riskDate"] for s in scores)


def test_a_score_differing_from_the_apps_is_checked_as_disagreeing(batches):
    [check] = quality_of(batches.records, DISAGREE["email"])
    assert check == {
        "customer": DISAGREE["email"],
        "riskDate": iso_millis(history([90, 90, 90, 91])[3][0]),
        "sparkScore": -0.5,
        "appScore": 99.0,
        "agree": False,
    }


def test_a_customer_with_a_thousand_tests_keeps_four_in_state(batches):
    scores = scores_of(batches.records, BUSY["email"])
    assert len(scores) == 1000 - 3
    final = risk_score(StepTest(*t) for t in batches.busy_tests)
    assert scores[-1]["score"] == final.score
    state = batches.state()
    assert len(state[BUSY["email"]]["stops"]) == 4
    assert len(state[BUSY["email"]]["durations"]) == 4
    assert state[BUSY["email"]]["stops"] == [stop for stop, _ in batches.busy_tests[-4:]]


def test_state_holds_one_row_per_customer(batches):
    state_rows = [sum(op["numRowsTotal"] for op in p["stateOperators"]) for p in batches.progress]
    assert state_rows[-1] == 3  # AGREE, DISAGREE, BUSY


def test_each_batch_counts_its_scores_checks_and_agreements(batches):
    """The observed counts the progress lines show (`2 scores, 2 checks, 1 agreeing, ...`)."""
    counted = {"scores": 0, "checks": 0, "agreeing": 0, "without_app_score": 0}
    for progress in batches.progress:
        for row in progress["observedMetrics"].values():
            for name in counted:
                counted[name] += row[name]
    # AGREE twice, DISAGREE once, and BUSY's scores the app never published, pushed out
    unmatched = 1000 - 3 - job.PENDING_LIMIT
    assert counted["checks"] == 3 + unmatched
    assert counted["agreeing"] == 2
    assert counted["without_app_score"] == unmatched


def test_scores_the_app_never_published_are_checked_without_its_value(batches):
    checks = quality_of(batches.records, BUSY["email"])
    assert len(checks) == 1000 - 3 - job.PENDING_LIMIT
    assert all("appScore" not in c and c["agree"] is False for c in checks)


# --- the pure parts --------------------------------------------------------------------------
def test_an_exact_repeat_of_a_held_test_gives_no_second_score():
    state = job.CustomerState()
    for stop, duration in history([70, 80, 95, 61]):
        state.add_test(stop, duration)
    assert state.add_test(*history([70, 80, 95, 61])[3]) is None
    assert len(state.stops) == 4


def test_an_unmatched_score_is_checked_without_the_apps_value_when_pushed_out():
    state = job.CustomerState()
    for i in range(job.PENDING_LIMIT + 1):
        assert state.add_spark_score(T0 + i, 1000, 0) == []
    assert state.trim() == [(T0, 1000, 0, None)]
    assert len(state.spark_dates) == job.PENDING_LIMIT


def test_a_batch_replaying_a_long_history_matches_every_score():
    state = job.CustomerState()
    tests = history([61 + (i * 7) % 50 for i in range(40)])
    model = app_model(tests)
    rows = [
        {"isTest": True, "stopTime": stop, "testTime": d, "partition": 0, "offset": i}
        for i, (stop, d) in enumerate(tests)
    ]
    rows += [
        {
            "isTest": False,
            "riskDateMs": tests[3 + i][0],
            "appScore": m["score"],
            "partition": 0,
            "offset": i,
        }
        for i, m in enumerate(model)
    ]
    out = job.advance(state, rows, now_ms=T0)
    checks = [o for o in out if o[0] == "check"]
    assert len(checks) == len(model) == 37
    assert all(c[4] is not None for c in checks)


def test_expired_state_checks_every_waiting_score():
    state = job.CustomerState()
    state.add_spark_score(T0, 1000, 0)
    state.add_spark_score(T0 + 1, 1000, 0)
    assert state.unmatched() == [(T0, 1000, 0, None), (T0 + 1, 1000, 0, None)]
    assert state.spark_dates == []


def test_the_state_ttl_is_a_spark_interval_and_a_bad_one_stops_the_job(spark, monkeypatch, capsys):
    assert job.interval_ms(spark, "400 days", "T") == 400 * 86_400_000
    assert job.interval_ms(spark, "2 weeks", "T") == 14 * 86_400_000
    monkeypatch.setenv("STEDI_SCORE_STATE_TTL", "forever")
    with pytest.raises(SystemExit) as stop:
        job.start_query(spark.newSession())
    assert stop.value.code == 2
    assert "STEDI_SCORE_STATE_TTL is not an interval" in capsys.readouterr().err


def test_the_graph_pages_quality_line_counts_checks_and_agreements():
    counts = QualityCounts()
    for value in [b'{"agree":true}', b'{"agree":false}', b'{"agree":true}', b"not json", None]:
        counts.add(value)
    assert counts.line() == "scores checked: 3, agreeing: 2"
