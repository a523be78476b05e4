"""Reading a Prometheus endpoint as a test does: prometheus_client's own text parser."""

from __future__ import annotations

import httpx
from prometheus_client.parser import text_string_to_metric_families

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

    def value(self, name: str, **labels: str) -> float | None:
        for family in self.families:
            for sample in family.samples:
                if sample.name == name and all(
                    sample.labels.get(k) == v for k, v in labels.items()
                ):
                    return sample.value
        return None
