"""Prometheus endpoints in tests: reading one with prometheus_client's own text parser, and
serving a stand-in for the engine's and the source's (the status panel's tests)."""

from __future__ import annotations

import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import httpx
from prometheus_client.parser import text_string_to_metric_families

from stedi.app.pipeline_status import JOBS as PANEL_JOBS

# What each part's endpoint must hold (docs/operations.md, "Metrics and the status panel").
APP = {
    "stedi_app_tests_stored",
    "stedi_app_scores_published",
    "stedi_app_outbox_scores",
    "stedi_app_graph_streams",
    "stedi_app_simulations_running",
    "stedi_app_login_failures",
    "stedi_app_refusals",
    "stedi_app_quality_checked",
    "stedi_app_quality_agreeing",
}
SOURCE = {
    "stedi_redis_source_records_published",
    "stedi_redis_source_dead_letters",
    "stedi_redis_source_seconds_since_confirmed",
    "stedi_redis_source_replication_lag_bytes",
}
JOBS = {
    "stedi_spark_job_active",
    "stedi_spark_last_progress_age_seconds",
    "stedi_spark_processed_rows_per_second",
    "stedi_spark_batch_seconds",
    "stedi_spark_state_rows",
    "stedi_spark_offsets_behind_max",
}
# Spark's own, for each query (spark.sql.streaming.metricsEnabled), e.g. the join's.
SPARK_JOIN = {
    f"metrics_stedi_driver_spark_streaming_customer_risk_join_{name}_Value"
    for name in ("inputRate_total", "processingRate_total", "latency", "states_rowsTotal")
}


class Scrape:
    """One scrape: its text, and its samples by (name, labels)."""

    def __init__(self, url: str):
        response = httpx.get(url, timeout=10, follow_redirects=True)
        assert response.status_code == 200, (url, response.status_code)
        self.text = response.text
        self.families = list(text_string_to_metric_families(self.text))

    def names(self) -> set[str]:
        return {family.name for family in self.families}

    def values(self, name: str, **labels: str) -> list[float]:
        """Every sample of `name` whose labels include `labels` (one per topic, say)."""
        return [
            sample.value
            for family in self.families
            for sample in family.samples
            if sample.name == name and labels.items() <= sample.labels.items()
        ]

    def value(self, name: str, **labels: str) -> float | None:
        for family in self.families:
            for sample in family.samples:
                if sample.name == name and all(
                    sample.labels.get(k) == v for k, v in labels.items()
                ):
                    return sample.value
        return None


def jobs_text(**changes) -> str:
    """The engine's jobs' metrics, all healthy, with `changes` as {job__metric: value}."""
    values = {
        "job_active": 1,
        "last_progress_age_seconds": 2,
        "processed_rows_per_second": 20,
        "batch_seconds": 0.4,
        "state_rows": 10,
        "last_batch_dead_letters": 0,
    }
    lines = []
    for job in PANEL_JOBS:
        for metric, value in values.items():
            value = changes.get(f"{job}__{metric}", value)
            lines.append(f'stedi_spark_{metric}{{job="{job}"}} {value}')
        behind = changes.get(f"{job}__offsets_behind_max", 0)
        lines.append(f'stedi_spark_offsets_behind_max{{job="{job}",topic="t"}} {behind}')
    return "\n".join(lines) + "\n"


def source_text(streaming: int = 1, lag: int = 0) -> str:
    return (
        "stedi_redis_source_records_published_total 12.0\n"
        "stedi_redis_source_dead_letters_total 0.0\n"
        "stedi_redis_source_seconds_since_confirmed 1.5\n"
        f"stedi_redis_source_streaming {streaming}\n"
        f"stedi_redis_source_replication_lag_bytes {lag}\n"
    )


class Endpoint:
    """A metrics endpoint on loopback serving `text`, counting its scrapes."""

    def __init__(self, text: str):
        self.text, self.scrapes = text, 0
        endpoint = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self):
                endpoint.scrapes += 1
                body = endpoint.text.encode()
                self.send_response(200)
                self.send_header("Content-Type", "text/plain; version=0.0.4")
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args):
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.port = self.server.server_address[1]
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self):
        self.server.shutdown()
        self.server.server_close()
