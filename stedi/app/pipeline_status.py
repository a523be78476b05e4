"""The graph page's status panel: one line per Spark job and for the Redis source, each
green, amber or red, from the metrics those parts serve (never from Kafka).

The app scrapes two endpoints on loopback, at most once per CACHE_SECONDS whatever the
number of viewers: `make run`'s Spark engine's jobs (stedi/stack/engine_metrics.py) and
the Redis source's (stedi/redis_source/metrics.py). `status_lines` is pure: samples in,
lines out. The thresholds (docs/operations.md, "The status panel"):

- a job is red when it is not running, its metrics do not answer, or Spark reported no
  progress for RED_AGE_S (an idle query still reports one every 10 s); amber when that
  age passes AMBER_AGE_S, a topic has more than AMBER_OFFSETS_BEHIND records unread, a
  batch took more than AMBER_BATCH_S, or the last batch wrote dead letters;
- the source is red when its metrics do not answer or its replication stream is down;
  amber when it is more than AMBER_LAG_BYTES behind Redis.
"""

from __future__ import annotations

import asyncio
import time
import urllib.error
import urllib.request
from collections import defaultdict

from prometheus_client.parser import text_string_to_metric_families

from stedi.config import Settings

JOBS = ("customers", "risk", "join", "score")  # make run's jobs (stedi/stack/engine.py)
CACHE_SECONDS = 2.0
FETCH_TIMEOUT_S = 2.0
AMBER_AGE_S, RED_AGE_S = 15.0, 30.0
AMBER_OFFSETS_BEHIND = 100
AMBER_BATCH_S = 5.0
AMBER_LAG_BYTES = 1024 * 1024

Samples = dict[tuple[str, tuple[tuple[str, str], ...]], float]


def parse(text: str) -> Samples:
    """(sample name, sorted labels) -> value, by prometheus_client's own parser."""
    return {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }


def by_job(samples: Samples) -> dict[str, dict[str, float]]:
    """job -> {metric: value}; the offsets behind are the most over the job's topics."""
    jobs: dict[str, dict[str, float]] = defaultdict(dict)
    for (name, labels), value in samples.items():
        job = dict(labels).get("job")
        if job is None or not name.startswith("stedi_spark_"):
            continue
        short = name.removeprefix("stedi_spark_")
        jobs[job][short] = max(value, jobs[job].get(short, value))
    return jobs


def job_line(name: str, metrics: dict[str, float] | None) -> dict:
    line = {"name": name, "state": "red", "reasons": []}
    if metrics is None:
        line["reasons"].append("no metrics from the Spark engine")
        return line
    if not metrics.get("job_active"):
        line["reasons"].append("not running")
        return line
    age = metrics.get("last_progress_age_seconds")
    line.update(
        age=age,
        rowsPerSecond=metrics.get("processed_rows_per_second"),
        batchSeconds=metrics.get("batch_seconds"),
        offsetsBehind=metrics.get("offsets_behind_max"),
        stateRows=metrics.get("state_rows"),
        deadLetters=metrics.get("last_batch_dead_letters"),
    )
    if age is None or age > RED_AGE_S:
        line["reasons"].append("no progress" if age is None else f"no progress for {age:.0f} s")
        return line
    reasons = line["reasons"]
    if age > AMBER_AGE_S:
        reasons.append(f"last progress {age:.0f} s ago")
    if (line["offsetsBehind"] or 0) > AMBER_OFFSETS_BEHIND:
        reasons.append(f"{line['offsetsBehind']:.0f} records behind")
    if (line["batchSeconds"] or 0) > AMBER_BATCH_S:
        reasons.append(f"batches take {line['batchSeconds']:.1f} s")
    if line["deadLetters"]:
        reasons.append("dead letters in the last batch")
    line["state"] = "amber" if reasons else "green"
    return line


def source_line(samples: Samples | None) -> dict:
    line = {"name": "redis source", "state": "red", "reasons": []}
    if samples is None:
        line["reasons"].append("no metrics from the Redis source")
        return line

    def value(name: str) -> float | None:
        return samples.get((name, ()))

    lag = value("stedi_redis_source_replication_lag_bytes")
    line.update(
        age=value("stedi_redis_source_seconds_since_confirmed"),
        published=value("stedi_redis_source_records_published_total"),
        offsetsBehind=lag,
        deadLetters=value("stedi_redis_source_dead_letters_total"),
    )
    if not value("stedi_redis_source_streaming"):
        line["reasons"].append("replication stream from Redis not established")
        return line
    if lag is not None and lag > AMBER_LAG_BYTES:
        line["reasons"].append(f"{lag:.0f} bytes behind Redis")
    line["state"] = "amber" if line["reasons"] else "green"
    return line


def status_lines(jobs: Samples | None, source: Samples | None) -> list[dict]:
    """The panel: the source, then each job in the pipeline's order."""
    per_job = by_job(jobs) if jobs is not None else {}
    lines = [source_line(source)]
    lines += [job_line(job, per_job.get(job) if jobs is not None else None) for job in JOBS]
    return lines


def fetch(url: str) -> Samples | None:
    """The endpoint's samples; None when it does not answer (or answers nonsense)."""
    try:
        with urllib.request.urlopen(url, timeout=FETCH_TIMEOUT_S) as response:
            return parse(response.read().decode())
    except (OSError, ValueError, urllib.error.URLError):
        return None


class PipelineStatus:
    """The panel's lines, scraped at most once per CACHE_SECONDS for all viewers."""

    def __init__(self, jobs_url: str | None, source_url: str | None):
        self.urls = (jobs_url, source_url)
        self.lines: list[dict] = []
        self.at = float("-inf")
        self.lock = asyncio.Lock()

    @classmethod
    def of(cls, settings: Settings) -> PipelineStatus:
        def url(port: int) -> str | None:
            return f"http://127.0.0.1:{port}/metrics" if port else None

        return cls(url(settings.spark_metrics_port), url(settings.redis_source_metrics_port))

    async def current(self) -> list[dict]:
        async with self.lock:  # viewers arriving together share one scrape
            if time.monotonic() - self.at >= CACHE_SECONDS:
                jobs, source = await asyncio.gather(
                    *(asyncio.to_thread(fetch, url) if url else _none() for url in self.urls)
                )
                self.lines, self.at = status_lines(jobs, source), time.monotonic()
            return self.lines


async def _none() -> None:
    return None
