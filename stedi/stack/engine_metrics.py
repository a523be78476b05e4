"""The Spark engine's per-job health, in Prometheus' text format: what Spark's own
PrometheusServlet does not give.

Spark's `/metrics/prometheus` (the UI's port; the engine turns it on) has each
query's input and processing rates, latency, state rows and watermark
(`spark.sql.streaming.metricsEnabled`), but no Kafka lag: that is only in the
progress events (`sources[].metrics`: `avgOffsetsBehindLatest`,
`maxOffsetsBehindLatest`). The cheapest way to expose it is to read each query's
last progress when Prometheus scrapes (a few calls into the JVM per scrape), not
on every batch (a listener would cost each micro-batch a callback into Python):
between scrapes this costs nothing.

`progress_metrics` is pure (a progress dict in, samples out); `JobsCollector` reads the
engine's sessions; `serve` starts the HTTP endpoint in a daemon thread. The engine
imports this module only when `make run` gives it a port (STEDI_SPARK_METRICS_PORT),
so a Spark without prometheus_client (the Docker image's) still runs the engine.
"""

from __future__ import annotations

import re
import time
from collections.abc import Callable
from datetime import datetime

from prometheus_client import CollectorRegistry, start_http_server
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector

# Per job: (name, help) of each gauge, all labelled by job (and the lag by topic).
GAUGES = {
    "stedi_spark_job_active": "1 while the job's query runs, 0 once it stopped or failed",
    "stedi_spark_last_progress_age_seconds": (
        "Seconds since the query's last progress event (an idle query reports at least every 10 s)"
    ),
    "stedi_spark_input_rows_per_second": "Rows read per second in the last micro-batch",
    "stedi_spark_processed_rows_per_second": "Rows processed per second in the last micro-batch",
    "stedi_spark_batch_seconds": "How long the last micro-batch took (triggerExecution)",
    "stedi_spark_state_rows": "Rows in the query's state stores",
    "stedi_spark_last_batch_dead_letters": "Dead letters the last micro-batch wrote",
    "stedi_spark_offsets_behind_max": "Kafka records not yet read, the most of a partition",
    "stedi_spark_offsets_behind_avg": "Kafka records not yet read, the mean over partitions",
}
LAG_METRICS = {
    "stedi_spark_offsets_behind_max": "maxOffsetsBehindLatest",
    "stedi_spark_offsets_behind_avg": "avgOffsetsBehindLatest",
}
TOPIC = re.compile(r"Subscribe(?:Pattern)?\[([^\]]*)\]")
Sample = tuple[str, dict[str, str], float]


def epoch_seconds(timestamp: str) -> float:
    """A progress event's timestamp (ISO 8601 UTC, `...Z`) as seconds since the epoch."""
    return datetime.fromisoformat(timestamp.replace("Z", "+00:00")).timestamp()


def source_topic(description: str) -> str:
    """`KafkaV2[Subscribe[stedi-events]]` -> `stedi-events` (the description if no match)."""
    match = TOPIC.search(description or "")
    return match.group(1) if match else description


def dead_letters(progress: dict) -> int:
    """The dead letters the jobs' `observe` checks counted in the batch (0 without them)."""
    observed = progress.get("observedMetrics") or {}
    total = 0
    for row in observed.values():
        fields = row.asDict() if hasattr(row, "asDict") else row
        if isinstance(fields, dict) and "dead_letters" in fields:
            total += int(fields["dead_letters"] or 0)
    return total


def progress_metrics(job: str, progress: dict | None, active: bool, now: float) -> list[Sample]:
    """The samples of one job from its query's last progress event (None: none yet)."""
    labels = {"job": job}
    samples: list[Sample] = [("stedi_spark_job_active", labels, 1.0 if active else 0.0)]
    if progress is None:
        return samples
    duration_ms = (progress.get("durationMs") or {}).get("triggerExecution", 0)
    state_rows = sum(op.get("numRowsTotal", 0) for op in progress.get("stateOperators") or [])
    samples += [
        (
            "stedi_spark_last_progress_age_seconds",
            labels,
            max(0.0, now - epoch_seconds(progress["timestamp"])),
        ),
        ("stedi_spark_input_rows_per_second", labels, progress.get("inputRowsPerSecond") or 0.0),
        (
            "stedi_spark_processed_rows_per_second",
            labels,
            progress.get("processedRowsPerSecond") or 0.0,
        ),
        ("stedi_spark_batch_seconds", labels, duration_ms / 1000),
        ("stedi_spark_state_rows", labels, float(state_rows)),
        ("stedi_spark_last_batch_dead_letters", labels, float(dead_letters(progress))),
    ]
    for source in progress.get("sources") or []:
        metrics = source.get("metrics") or {}
        topic_labels = {**labels, "topic": source_topic(source.get("description", ""))}
        for name, key in LAG_METRICS.items():
            if key in metrics:
                samples.append((name, topic_labels, float(metrics[key])))
    return samples


class JobsCollector(Collector):
    """Samples of every job, read at scrape time from `queries()`: job name -> its
    StreamingQuery, or None when the job has none running."""

    def __init__(self, queries: Callable[[], dict]):
        self.queries = queries

    def collect(self):
        families = {
            name: GaugeMetricFamily(
                name, text, labels=["job", "topic"] if name in LAG_METRICS else ["job"]
            )
            for name, text in GAUGES.items()
        }
        now = time.time()
        for job, query in self.queries().items():
            active = query is not None and query.isActive
            progress = query.lastProgress if query is not None else None
            for name, labels, value in progress_metrics(job, progress, active, now):
                families[name].add_metric(list(labels.values()), value)
        yield from families.values()


def serve(port: int, queries: Callable[[], dict]) -> str:
    """Serves the jobs' metrics on 127.0.0.1:`port` in a daemon thread; returns the URL."""
    registry = CollectorRegistry(auto_describe=False)
    registry.register(JobsCollector(queries))
    start_http_server(port, addr="127.0.0.1", registry=registry)
    return f"http://127.0.0.1:{port}/metrics"
