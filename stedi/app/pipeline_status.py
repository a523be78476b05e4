"""The graph page's status panel: one line per Spark job and for the Redis source, each
green, amber or red, from the metrics those parts serve (never from Kafka).

The app scrapes two endpoints on loopback, at most once per CACHE_SECONDS whatever the
number of viewers: `make run`'s Spark engine's jobs (stedi/stack/engine_metrics.py) and
the Redis source's (stedi/redis_source/metrics.py). A job the engine does not run (handed
over with `stop-job`, or no make run at all) may run alone, from its wrapper: its driver
announced its UI in the stack dir (stedi/stack/drivers.py), and the same scrape reads that
driver's Spark PrometheusServlet, whose gauges of the job's query make its line (no lag,
batch age or dead letters there: those show as missing). `status_lines` is pure: samples
in, lines out. The thresholds (docs/operations.md, "The status panel"):

- a job is red when it is not running, its metrics do not answer, or Spark reported no
  progress for RED_AGE_S (an idle query still reports at least every 10 s); amber when that
  age passes AMBER_AGE_S, a topic has more than AMBER_OFFSETS_BEHIND records unread, a
  batch took more than AMBER_BATCH_S, or the last batch wrote dead letters;
- a job run alone is red when its driver does not answer or has no query of the job's
  name (stopped, or failed and waiting to restart); amber when a batch took more than
  AMBER_BATCH_S;
- the source is red when its metrics do not answer or its replication stream is down;
  amber when it is more than AMBER_LAG_BYTES behind Redis.
"""

from __future__ import annotations

import asyncio
import re
import time
import urllib.error
import urllib.parse
import urllib.request
from collections import defaultdict
from dataclasses import dataclass

from prometheus_client.parser import text_string_to_metric_families

from stedi.config import Settings
from stedi.stack import engine
from stedi.stack.drivers import announced

# make run's jobs, each with its script and the script's query name (QUERY_NAME), which
# names the query's gauges in a driver that runs it alone.
JOB_SCRIPTS = {job.name: (job.script, job.query) for job in engine.JOBS}
JOBS = tuple(JOB_SCRIPTS)
# Spark's PrometheusServlet on a driver's UI (bin/submit turns it on, namespace `stedi`).
SERVLET_PATH = "/metrics/prometheus/"
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


@dataclass(frozen=True)
class Driver:
    """A driver that announced itself running a job alone, and its servlet's samples
    (None: it did not answer)."""

    pid: int | None
    samples: Samples | None


def query_gauges(samples: Samples, query: str) -> dict[str, float]:
    """The query's gauges in a driver's servlet samples, by their short names (`latency`,
    `processingRate_total`, `states_rowsTotal`, ...); empty when the driver runs no such
    query (Spark drops them when it stops)."""
    prefix = f"metrics_stedi_driver_spark_streaming_{re.sub(r'[^A-Za-z0-9]', '_', query)}_"
    return {
        name.removeprefix(prefix).removesuffix("_Value"): value
        for (name, _), value in samples.items()
        if name.startswith(prefix) and name.endswith("_Value")
    }


def driver_line(name: str, driver: Driver) -> dict:
    script, query = JOB_SCRIPTS[name]
    line = {"name": name, "state": "red", "reasons": []}
    if driver.samples is None:
        line["reasons"].append(f"not running: its driver (pid {driver.pid}) does not answer")
        return line
    gauges = query_gauges(driver.samples, query)
    if "latency" not in gauges:
        line["reasons"].append(f"not running: its driver (pid {driver.pid}) has no {query} query")
        return line
    line.update(
        rowsPerSecond=gauges.get("processingRate_total"),
        batchSeconds=gauges["latency"] / 1000,
        stateRows=gauges.get("states_rowsTotal"),
        note=f"run alone ({script}, pid {driver.pid}): no lag, batch age or dead letters",
    )
    if line["batchSeconds"] > AMBER_BATCH_S:
        line["reasons"].append(f"batches take {line['batchSeconds']:.1f} s")
    line["state"] = "amber" if line["reasons"] else "green"
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


def engine_runs(jobs: Samples | None) -> set[str]:
    """The jobs whose query runs in make run's engine."""
    per_job = by_job(jobs) if jobs is not None else {}
    return {job for job, metrics in per_job.items() if metrics.get("job_active")}


def status_lines(
    jobs: Samples | None, source: Samples | None, drivers: dict[str, Driver] | None = None
) -> list[dict]:
    """The panel: the source, then each job in the pipeline's order; a job the engine does
    not run gets the line of the driver that announced itself running it (`drivers`)."""
    per_job = by_job(jobs) if jobs is not None else {}
    drivers = drivers or {}
    lines = [source_line(source)]
    for job in JOBS:
        if job in drivers and job not in engine_runs(jobs):
            lines.append(driver_line(job, drivers[job]))
        else:
            lines.append(job_line(job, per_job.get(job) if jobs is not None else None))
    return lines


def loopback_servlet(record: dict) -> str | None:
    """The servlet's URL of an announced driver; None unless its UI is on loopback (the app
    scrapes nothing else)."""
    ui = urllib.parse.urlsplit(record.get("ui", ""))
    if ui.scheme != "http" or ui.hostname not in ("127.0.0.1", "localhost") or not ui.port:
        return None
    return f"http://127.0.0.1:{ui.port}{SERVLET_PATH}"


def fetch(url: str) -> Samples | None:
    """The endpoint's samples; None when it does not answer (or answers nonsense)."""
    try:
        with urllib.request.urlopen(url, timeout=FETCH_TIMEOUT_S) as response:
            return parse(response.read().decode())
    except (OSError, ValueError, urllib.error.URLError):
        return None


def fetch_driver(stack_dir: str, script: str) -> Driver | None:
    """The driver announced for `script` in the stack dir, scraped; None if none announced."""
    record = announced(stack_dir, script)
    url = loopback_servlet(record) if record is not None else None
    if url is None:
        return None
    pid = record.get("pid")
    return Driver(pid if isinstance(pid, int) else None, fetch(url))


class PipelineStatus:
    """The panel's lines, scraped at most once per CACHE_SECONDS for all viewers."""

    def __init__(self, jobs_url: str | None, source_url: str | None, stack_dir: str | None):
        self.urls = (jobs_url, source_url)
        self.stack_dir = stack_dir  # where drivers run alone announce themselves
        self.lines: list[dict] = []
        self.at = float("-inf")
        self.lock = asyncio.Lock()

    @classmethod
    def of(cls, settings: Settings) -> PipelineStatus:
        def url(port: int) -> str | None:
            return f"http://127.0.0.1:{port}/metrics" if port else None

        return cls(
            url(settings.spark_metrics_port),
            url(settings.redis_source_metrics_port),
            settings.stack_dir,
        )

    async def current(self) -> list[dict]:
        async with self.lock:  # viewers arriving together share one scrape
            if time.monotonic() - self.at >= CACHE_SECONDS:
                jobs, source = await asyncio.gather(
                    *(asyncio.to_thread(fetch, url) if url else _none() for url in self.urls)
                )
                drivers = await self._drivers(JOB_SCRIPTS.keys() - engine_runs(jobs))
                self.lines, self.at = status_lines(jobs, source, drivers), time.monotonic()
            return self.lines

    async def _drivers(self, jobs: set[str]) -> dict[str, Driver]:
        """The announced drivers of `jobs` (those the engine does not run), scraped."""
        if self.stack_dir is None or not jobs:
            return {}
        names = sorted(jobs)
        found = await asyncio.gather(
            *(asyncio.to_thread(fetch_driver, self.stack_dir, JOB_SCRIPTS[job][0]) for job in names)
        )
        return {job: driver for job, driver in zip(names, found, strict=True) if driver is not None}


async def _none() -> None:
    return None
