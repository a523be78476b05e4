"""The engine's jobs' metrics: each job's line from its query's last progress (Kafka lag
by topic, batch age, rates, batch time, state rows, dead letters), in Prometheus' text
format read back with prometheus_client's parser; and the engine's Spark settings."""

import time

from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.parser import text_string_to_metric_families

from stedi.stack.engine_metrics import (
    GAUGES,
    JobsCollector,
    epoch_seconds,
    progress_metrics,
    source_topic,
)

# A join's progress event, as Spark's StreamingQueryProgress.json gives it (trimmed).
JOIN_PROGRESS = {
    "name": "customer-risk-join",
    "batchId": 7,
    "timestamp": "2026-11-30T12:00:00.000Z",
    "numInputRows": 12,
    "inputRowsPerSecond": 6.0,
    "processedRowsPerSecond": 24.0,
    "durationMs": {"triggerExecution": 500, "addBatch": 400},
    "stateOperators": [{"numRowsTotal": 30}, {"numRowsTotal": 12}],
    "sources": [
        {
            "description": "KafkaV2[Subscribe[redis-server]]",
            "metrics": {
                "avgOffsetsBehindLatest": "0.0",
                "maxOffsetsBehindLatest": "0",
                "minOffsetsBehindLatest": "0",
            },
        },
        {
            "description": "KafkaV2[Subscribe[stedi-events]]",
            "metrics": {"avgOffsetsBehindLatest": "1.5", "maxOffsetsBehindLatest": "3"},
        },
    ],
    "observedMetrics": {
        "customer_checks": {"dead_letters": 1, "rows": 4},
        "event_checks": {"dead_letters": 2, "rows": 8},
    },
}


def by_name(samples) -> dict:
    return {(name, tuple(labels.values())): value for name, labels, value in samples}


def test_a_progress_event_gives_the_jobs_line_and_its_lag_per_topic():
    now = epoch_seconds(JOIN_PROGRESS["timestamp"]) + 4
    got = by_name(progress_metrics("join", JOIN_PROGRESS, active=True, now=now))
    assert got == {
        ("stedi_spark_job_active", ("join",)): 1.0,
        ("stedi_spark_last_progress_age_seconds", ("join",)): 4.0,
        ("stedi_spark_input_rows_per_second", ("join",)): 6.0,
        ("stedi_spark_processed_rows_per_second", ("join",)): 24.0,
        ("stedi_spark_batch_seconds", ("join",)): 0.5,
        ("stedi_spark_state_rows", ("join",)): 42.0,
        ("stedi_spark_last_batch_dead_letters", ("join",)): 3.0,
        ("stedi_spark_offsets_behind_max", ("join", "redis-server")): 0.0,
        ("stedi_spark_offsets_behind_avg", ("join", "redis-server")): 0.0,
        ("stedi_spark_offsets_behind_max", ("join", "stedi-events")): 3.0,
        ("stedi_spark_offsets_behind_avg", ("join", "stedi-events")): 1.5,
    }


def test_a_job_without_a_query_or_progress_is_inactive_and_nothing_more():
    assert progress_metrics("score", None, active=False, now=0.0) == [
        ("stedi_spark_job_active", {"job": "score"}, 0.0)
    ]


def test_topics_come_from_the_kafka_source_description():
    assert source_topic("KafkaV2[Subscribe[stedi-events]]") == "stedi-events"
    assert source_topic("KafkaV2[SubscribePattern[stedi-.*]]") == "stedi-.*"
    assert source_topic("MemoryStream[value#1]") == "MemoryStream[value#1]"


def parsed(collector) -> dict:
    registry = CollectorRegistry(auto_describe=False)
    registry.register(collector)
    text = generate_latest(registry).decode()
    return {
        (sample.name, sample.labels.get("job")): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }


def test_the_collector_reads_a_real_querys_progress_and_sees_it_stop(spark):
    session = spark.newSession()
    query = (
        session.readStream.format("rate")
        .option("rowsPerSecond", 5)
        .load()
        .writeStream.format("noop")
        .queryName("metrics-probe")
        .trigger(processingTime="200 milliseconds")
        .start()
    )
    queries = {"risk": query, "customers": None}
    collector = JobsCollector(lambda: queries)
    try:
        deadline = time.monotonic() + 60
        while query.lastProgress is None or not query.lastProgress.get("numInputRows"):
            assert time.monotonic() < deadline, "the probe query made no progress"
            time.sleep(0.2)
        running = parsed(collector)
    finally:
        query.stop()
    assert {name for name, _ in running} == set(GAUGES) - {
        "stedi_spark_offsets_behind_max",
        "stedi_spark_offsets_behind_avg",
    }  # a rate source has no Kafka lag
    assert running[("stedi_spark_job_active", "risk")] == 1
    assert running[("stedi_spark_job_active", "customers")] == 0
    assert running[("stedi_spark_processed_rows_per_second", "risk")] > 0
    assert 0 <= running[("stedi_spark_last_progress_age_seconds", "risk")] < 600
    stopped = parsed(collector)
    assert stopped[("stedi_spark_job_active", "risk")] == 0
