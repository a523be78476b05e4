"""The join job's whole query (sparkpykafkajoin.customer_risk) as a real stream.

A file source shaped like the Kafka source stands in for both topics and a
memory sink for the Kafka sink, so every micro-batch runs the same plan as in
production: arrival time, deduplication, the stream-stream join, dead letters.
(The memory sink cannot restart from a checkpoint: restarts are tested on real
Kafka in tests/integration/test_spark_jobs.py.)
"""

import hashlib
import json
import time
from datetime import datetime

import pytest

from tests.records import KAFKA_SOURCE_SCHEMA, customer, customer_record, kafka_rows, risk_record
from tests.scripts import join_job

STATE_STORE = "spark.sql.streaming.stateStore.providerClass"
SANTOSH = customer("Santosh Fibonnaci", "Santosh.Fibonnaci@test.com", "1963-01-01")
ANN = customer("Ann One", "ann@test.com", "1965-01-01")


class StreamingJoin:
    """The join query over two folders of Kafka-shaped records, one per topic.

    The session gets the settings the script's `start_query` fixes in a checkpoint, for
    the query's life.
    """

    TOPICS = ("redis-server", "stedi-events")

    def __init__(self, spark, tmp_path, risk_wait="1 hour"):
        self.spark, self.tmp_path = spark, tmp_path
        self.offsets = dict.fromkeys(self.TOPICS, 0)
        self.wait_ms = join_job.interval_ms(spark, risk_wait, "STEDI_RISK_WAIT")
        for topic in self.TOPICS:  # the file source needs a folder with the schema
            self.append(topic, [])
        conf = {**join_job.QUERY_CONF, STATE_STORE: join_job.STATE_STORES["rocksdb"]}
        self.saved_conf = {key: spark.conf.get(key, None) for key in conf}
        for key, value in conf.items():
            spark.conf.set(key, value)
        self.start()

    def folder(self, topic):
        return str(self.tmp_path / "records" / topic)

    def start(self):
        customers, events = (
            self.spark.readStream.schema(KAFKA_SOURCE_SCHEMA).parquet(self.folder(topic))
            for topic in self.TOPICS
        )
        self.query = (
            join_job.customer_risk(customers, events, self.wait_ms, "customer-risk", "dead-letter")
            .writeStream.format("memory")
            .queryName("join_output")
            .outputMode("append")
            .option("checkpointLocation", str(self.tmp_path / "checkpoint"))
            .start()
        )

    def append(self, topic, values):
        rows = kafka_rows(topic, values, datetime(2026, 1, 1), self.offsets[topic])
        self.offsets[topic] += len(values)
        frame = self.spark.createDataFrame(rows, KAFKA_SOURCE_SCHEMA)
        frame.write.mode("append").parquet(self.folder(topic))

    def run(self):
        self.query.processAllAvailable()

    def records(self, topic="customer-risk"):
        self.run()
        rows = self.spark.table("join_output").where(f"topic = '{topic}'").collect()
        return [(r.key, json.loads(r.value)) for r in rows]

    def scores(self):
        return sorted(value["score"] for _, value in self.records())

    def state_rows(self):
        """State rows per operator of the last batch, as query progress reports them."""
        rows = {}
        for op in self.query.lastProgress["stateOperators"]:
            rows[op["operatorName"]] = rows.get(op["operatorName"], 0) + op["numRowsTotal"]
        return rows

    def stop(self):
        self.query.stop()
        for key, value in self.saved_conf.items():
            if value is None:
                self.spark.conf.unset(key)
            else:
                self.spark.conf.set(key, value)


@pytest.fixture
def join(spark, tmp_path):
    streaming = StreamingJoin(spark, tmp_path)
    yield streaming
    streaming.stop()


def headers_of(row) -> list[tuple[str, bytes]]:
    return [(h.key, bytes(h.value)) for h in row.headers]


def test_output_record_is_the_spec_json_keyed_by_email_with_its_risk_date_header(join):
    join.append("redis-server", [customer_record(SANTOSH)])
    join.append("stedi-events", [risk_record(SANTOSH["email"], 28.5, "2020-09-14T07:54:06.417Z")])
    rows = join.spark.table("join_output").where("topic = 'customer-risk'")
    join.run()
    [row] = rows.collect()
    assert row.key == "Santosh.Fibonnaci@test.com"
    assert row.value == (
        '{"customer":"Santosh.Fibonnaci@test.com","score":28.5,'
        '"email":"Santosh.Fibonnaci@test.com","birthYear":1963}'
    )
    assert headers_of(row) == [("riskDate", b"2020-09-14T07:54:06.417Z")]


def test_the_risk_date_header_tells_two_assessments_of_one_score_apart(join):
    """Same customer and score, two riskDates: the value is the same, the header is not."""
    join.append("redis-server", [customer_record(SANTOSH)])
    join.append(
        "stedi-events",
        [
            risk_record(SANTOSH["email"], 1.5, "2020-09-14T07:54:06.417Z"),
            risk_record(SANTOSH["email"], 1.5, "2020-09-15T00:00:00.000Z"),
        ],
    )
    join.run()
    rows = join.spark.table("join_output").where("topic = 'customer-risk'").collect()
    assert len({row.value for row in rows}) == 1
    assert sorted(headers_of(row) for row in rows) == [
        [("riskDate", b"2020-09-14T07:54:06.417Z")],
        [("riskDate", b"2020-09-15T00:00:00.000Z")],
    ]


def test_a_customer_written_again_gives_one_output_per_score_and_the_first_version_wins(join):
    join.append("redis-server", [customer_record(SANTOSH), customer_record(SANTOSH)])
    join.run()
    moved = {**SANTOSH, "birthDay": "1970-06-06"}
    join.append("redis-server", [customer_record(moved)])
    join.append("stedi-events", [risk_record(SANTOSH["email"], 1.0)])
    join.run()
    join.append("stedi-events", [risk_record(SANTOSH["email"], 2.0)])
    join.append("redis-server", [customer_record(SANTOSH)])
    records = join.records()
    assert sorted(v["score"] for _, v in records) == [1.0, 2.0]
    assert {v["birthYear"] for _, v in records} == {1963}


def test_a_score_arriving_before_its_customer_joins_when_the_customer_arrives(join):
    join.append("stedi-events", [risk_record(SANTOSH["email"], 4.5)])
    assert join.records() == []
    join.append("redis-server", [customer_record(SANTOSH)])
    assert join.scores() == [4.5]


def test_a_repeated_score_gives_one_output_in_one_batch_and_across_batches(join):
    """A repeat of a record (same customer, score and riskDate) within the wait is dropped;
    another riskDate or score is another assessment."""
    join.append("redis-server", [customer_record(SANTOSH)])
    event = risk_record(SANTOSH["email"], 3.0, "2026-01-01T10:00:00.000Z")
    join.append("stedi-events", [event, event])
    assert join.scores() == [3.0]
    join.append("stedi-events", [event])
    assert join.scores() == [3.0]
    join.append(
        "stedi-events",
        [
            risk_record(SANTOSH["email"], 3.0, "2026-01-01T11:00:00.000Z"),
            risk_record(SANTOSH["email"], 4.0, "2026-01-01T10:00:00.000Z"),
        ],
    )
    assert join.scores() == [3.0, 3.0, 4.0]


def test_a_score_waiting_for_its_customer_joins_once_however_often_it_is_repeated(join):
    event = risk_record(SANTOSH["email"], 5.0)
    join.append("stedi-events", [event])
    join.run()
    join.append("stedi-events", [event, event])
    join.run()
    join.append("redis-server", [customer_record(SANTOSH)])
    assert join.scores() == [5.0]


def test_bad_records_become_dead_letters_beside_good_rows_and_the_query_goes_on(join):
    join.append(
        "redis-server",
        ["garbage", None, customer_record(SANTOSH, {**ANN, "birthDay": "01/01/1965"})],
    )
    join.append("stedi-events", ["{{", '{"customer":1}', risk_record(SANTOSH["email"], 2.0)])
    assert join.scores() == [2.0]
    letters = {key: value for key, value in join.records("dead-letter")}
    assert sorted(letters) == [
        "redis-server/0/0",
        "redis-server/0/1",
        "redis-server/0/2",
        "stedi-events/0/0",
        "stedi-events/0/1",
    ]
    assert letters["redis-server/0/2"]["member"] == 1
    letter_rows = join.spark.table("join_output").where("topic = 'dead-letter'").collect()
    assert [row.headers for row in letter_rows] == [None] * 5  # dead letters have no header
    assert letters["redis-server/0/2"]["reason"] == "customer birthDay is missing or not yyyy-MM-dd"
    assert letters["stedi-events/0/0"] == {
        "sourceTopic": "stedi-events",
        "sourcePartition": 0,
        "sourceOffset": 0,
        "sourceTimestamp": "2026-01-01T00:00:00.000Z",
        "reason": "value is not a JSON object",
        "valueBytes": 2,
        "valueSha256": hashlib.sha256(b"{{").hexdigest(),
        "value": "{{",
    }
    assert join.query.isActive
    counted = [
        row["dead_letters"]
        for progress in join.query.recentProgress
        for row in progress["observedMetrics"].values()
    ]
    assert sum(counted) == 5, counted  # the progress lines' dead letters


def test_a_dead_letter_of_a_huge_value_is_cut_to_64_kib_with_length_and_hash(join):
    huge = '{"customer": "' + "x" * 300_000 + '"}'
    join.append("stedi-events", [huge])
    [(key, letter)] = join.records("dead-letter")
    assert key == "stedi-events/0/0"
    assert letter["valueBytes"] == len(huge)
    assert letter["valueSha256"] == hashlib.sha256(huge.encode()).hexdigest()
    assert letter["value"] == huge[: 64 * 1024]


def test_state_holds_each_customer_twice_and_each_score_twice_for_the_wait_only(spark, tmp_path):
    """State rows = 2 per customer (dedup + join) + 2 per score of the last wait (repeat
    filter + join).

    A score, joined or still waiting for an unknown email, leaves both at the first
    batch after the watermark (the latest arrival) passes its arrival by the wait;
    the customers stay. A repeat arriving after the wait is a new output.
    """
    wait = 9  # seconds of real time: the test sleeps through it once (under 10 s)
    join = StreamingJoin(spark, tmp_path, risk_wait=f"{wait} seconds")
    try:
        join.append("redis-server", [customer_record(SANTOSH), customer_record(ANN)])
        join.append(
            "stedi-events", [risk_record("nobody@test.com", 1.0), risk_record("no@test.com", 2.0)]
        )
        join.run()
        waiting_since = time.monotonic()
        assert join.state_rows() == {
            "dedupe": 2,
            "dedupeWithinWatermark": 2,
            "symmetricHashJoin": 4,
        }
        first = risk_record(SANTOSH["email"], 3.0)
        join.append("stedi-events", [first])
        assert join.scores() == [3.0]
        joined_at = time.monotonic()
        join.append("redis-server", [])  # a batch that would evict what the watermark passed
        join.run()
        assert time.monotonic() - waiting_since < wait, "the machine is too slow for this test"
        assert join.state_rows() == {
            "dedupe": 2,
            "dedupeWithinWatermark": 3,
            "symmetricHashJoin": 5,
        }
        time.sleep(max(0.0, wait + 1 - (time.monotonic() - joined_at)))
        join.append("stedi-events", [risk_record(ANN["email"], 4.0)])
        join.run()
        join.append("redis-server", [])  # the next batch evicts by the moved watermark
        assert join.scores() == [3.0, 4.0]
        assert join.state_rows() == {
            "dedupe": 2,
            "dedupeWithinWatermark": 1,
            "symmetricHashJoin": 3,
        }
        join.append("stedi-events", [first])  # its first arrival is more than a wait ago
        assert join.scores() == [3.0, 3.0, 4.0]
    finally:
        join.stop()


def test_starting_offsets_give_each_source_its_own_topic_and_earliest_for_a_topic_not_named(
    monkeypatch, capsys
):
    spec = json.dumps({"redis-server": {"0": 42}, "stedi-events": {"0": -2, "1": 7}})
    monkeypatch.setenv("STEDI_STARTING_OFFSETS", spec)
    assert json.loads(join_job.starting_offsets("redis-server")) == {"redis-server": {"0": 42}}
    assert json.loads(join_job.starting_offsets("stedi-events")) == {
        "stedi-events": {"0": -2, "1": 7}
    }
    assert join_job.starting_offsets("customer-risk") == "earliest"
    monkeypatch.setenv("STEDI_STARTING_OFFSETS", "latest")
    assert join_job.starting_offsets("stedi-events") == "latest"
    for wrong in ("{redis-server: 1}", '{"redis-server": 42}', '{"redis-server": {"0": "x"}}'):
        monkeypatch.setenv("STEDI_STARTING_OFFSETS", wrong)
        with pytest.raises(SystemExit) as stop:
            join_job.starting_offsets("redis-server")
        assert stop.value.code == 2  # a bad setting: the wrappers do not restart it
        assert f"STEDI_STARTING_OFFSETS is not Spark's JSON of offsets: {wrong}" in (
            capsys.readouterr().err
        )


def test_the_risk_wait_is_a_spark_interval_read_in_milliseconds(spark, capsys):
    assert join_job.interval_ms(spark, "1 hour", "W") == 3_600_000
    assert join_job.interval_ms(spark, "1 hour 30 minutes", "W") == 5_400_000
    assert join_job.interval_ms(spark, "interval 2 days", "W") == 172_800_000
    assert join_job.interval_ms(spark, "1.5 seconds", "W") == 1_500
    assert join_job.interval_ms(spark, "2 weeks", "W") == 14 * 86_400_000
    assert join_job.interval_ms(spark, "500 milliseconds", "W") == 500
    for bad in ("", "soon", "1 fortnight", "1 hour and more", "-1 hour"):
        with pytest.raises(SystemExit) as stop:
            join_job.interval_ms(spark, bad, "W")
        assert stop.value.code == 2
        assert f"W is not an interval such as '1 hour': {bad!r}" in capsys.readouterr().err


def test_a_bad_risk_wait_stops_the_job_with_a_clear_message_before_it_reads(
    spark, monkeypatch, capsys
):
    monkeypatch.setenv("STEDI_RISK_WAIT", "soon")
    with pytest.raises(SystemExit) as stop:
        join_job.start_query(spark.newSession())
    assert stop.value.code == 2
    assert "STEDI_RISK_WAIT is not an interval such as '1 hour': 'soon'" in capsys.readouterr().err


def test_the_session_broadcasts_hadoops_configuration_without_yarn_and_mapreduce_defaults(spark):
    """The driver jar's empty yarn-default.xml and mapred-default.xml come first on the class
    path: what the join's operator broadcasts (SessionState.newHadoopConf) stays small,
    the core defaults stay, and a value set by hand is kept."""
    contexts = spark.sparkContext._jsc.hadoopConfiguration()
    contexts.set("mapreduce.job.maps", "7")
    try:
        for conf in (contexts, spark._jsparkSession.sessionState().newHadoopConf()):
            assert conf.get("yarn.resourcemanager.address") is None
            assert conf.get("mapreduce.task.timeout") is None
            assert conf.get("fs.defaultFS") == "file:///"
            assert conf.size() < 500
        assert contexts.get("mapreduce.job.maps") == "7"
    finally:
        contexts.unset("mapreduce.job.maps")
