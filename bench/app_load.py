"""`make bench`'s app section (issue 35): the STEDI app at a clinic network's scale.

A redis-server of its own (a free port, in memory only) is seeded with BENCH_APP_USERS users
and BENCH_APP_TESTS rapid step tests of 1 customer per 50 tests, 20 customers per caregiver,
as the app wrote them before issue 35 (bench/app_data.py). Two app processes
(`python -m stedi.app`) run on it, on free loopback ports, one secret key; their Kafka
topics are the run's own. Measured, in order:

- start: each process's launch to its first /health 200. The first one then runs the
  one-time index pass over the older data in the background: `index_pass_s` until it is
  done, and /health's slowest answer of both processes meanwhile;
- load: for BENCH_APP_LOAD_SECONDS, BENCH_APP_CLIENTS caregivers at once (logged in
  beforehand), taking turns between the processes, each loading the timer page, one of
  their customers' page and posting a test, in turn, BENCH_APP_THINK_MS apart on average;
  meanwhile BENCH_APP_LOGIN_RATE logins a second, each a new browser of a user picked at
  random (bench/app_clients.py). Every answer is checked;
- viewers: BENCH_APP_VIEWERS live graphs, while BENCH_APP_POINTS records are written to the
  graph's topic (LogAppendTime) at BENCH_APP_POINT_RATE a second: how many viewers got
  every point, and each point's delay from its record's append time to its arrival;
- memory: each process's RSS once started and once the index pass is done, and its peak
  (VmHWM) at the end.

argon2's own time (one verify, the median of 10, here) is the login's yardstick; before the
load, LOGINS_ALONE logins one after another give the login's time without others.
`python -m bench.app_load` runs this section alone (BENCH_APP_VIEWERS=0: without Kafka).
"""

from __future__ import annotations

import asyncio
import json
import secrets
import statistics
import sys
import time

from argon2 import PasswordHasher

from bench import app_clients, app_data, data
from bench.app_servers import AppProcess, PrivateRedis
from bench.latency import percentile
from bench.machine import machine
from bench.report import app_rows
from bench.settings import BenchSettings
from bench.topics import Topics, read_every_record
from stedi.app.store import INDEXED
from stedi.config import Settings

PROCESSES = 2
LOGINS_ALONE = 10  # one after another, before the load: a login's time without others
VIEWERS_PER_LOGIN = 10
VIEWER_SETTLE_S = 2.0  # after the last viewer connected, before the first point
VIEWER_WAIT_S = 10.0  # after the last point, for it to reach every viewer


def log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def argon2_ms() -> float:
    hasher = PasswordHasher()
    hashed = hasher.hash(app_data.PASSWORD)
    times = []
    for _ in range(10):
        began = time.perf_counter()
        hasher.verify(hashed, app_data.PASSWORD)
        times.append(time.perf_counter() - began)
    return round(statistics.median(times) * 1000, 1)


def index_pass_done(client) -> bool:
    pipe = client.pipeline(transaction=False)
    for entity in ("User", "Customer", "RapidStepTest"):
        pipe.zcard(entity).hget(INDEXED, entity)
    pipe.exists("IndexPass", "UnindexedCustomers")
    *counts, busy = pipe.execute()
    sizes, indexed = counts[0::2], counts[1::2]
    return busy == 0 and all(size == int(n or 0) for size, n in zip(sizes, indexed, strict=True))


def wait_for_index_pass(client, apps: list[AppProcess], timeout: float) -> tuple[float, float]:
    """Seconds until the pass is done, and /health's slowest answer meanwhile (ms)."""
    began, slowest = time.monotonic(), 0.0
    while not index_pass_done(client):
        if time.monotonic() - began > timeout:
            raise RuntimeError(f"the index pass was not done after {timeout} s")
        for app in apps:
            asked = time.perf_counter()
            status = app.health(timeout=5)
            slowest = max(slowest, (time.perf_counter() - asked) * 1000)
            if status != 200:
                raise RuntimeError(f"/health answered {status} during the index pass")
        time.sleep(0.2)
    return time.monotonic() - began, slowest


def quantiles(seconds: list[float]) -> dict[str, float]:
    values = sorted(s * 1000 for s in seconds)
    return {
        "count": len(values),
        "p50_ms": round(percentile(values, 50), 1),
        "p99_ms": round(percentile(values, 99), 1),
        "max_ms": round(values[-1], 1),
    }


def app_env(redis_port: int, settings: Settings, topics: Topics | None) -> dict[str, str]:
    env = {
        "REDIS_HOST": "127.0.0.1",
        "REDIS_PORT": str(redis_port),
        "STEDI_SECRET_KEY": secrets.token_urlsafe(32),
        "STEDI_ADMIN_USER": "bench.admin@test.com",
        "STEDI_ADMIN_PASSWORD": app_data.PASSWORD,
        "STEDI_SIMULATE": "0",
        "STEDI_TRUSTED_PROXY": "127.0.0.1",  # each client's X-Forwarded-For names it
        "STEDI_SPARK_METRICS_PORT": "0",
        "STEDI_REDIS_SOURCE_METRICS_PORT": "0",
        "PYTHONUNBUFFERED": "1",
    }
    if topics is not None:
        append_time = {"message.timestamp.type": "LogAppendTime"}
        env["KAFKA_RISK_TOPIC"] = topics.create("app-risk", **append_time)
        env["STEDI_EVENTS_TOPIC"] = topics.create("app-events")
        env["STEDI_RISK_QUALITY_TOPIC"] = topics.create("app-quality")
    return env


def measure_viewers(
    settings: Settings, bench: BenchSettings, urls: list[str], risk_topic: str
) -> dict:
    def produce() -> list[int]:
        producer = data.producer(settings, linger_ms=0)
        ids = list(range(1, bench.app_points + 1))
        began = time.monotonic()
        for n, point in enumerate(ids):
            pause = began + n / bench.app_point_rate - time.monotonic()
            if pause > 0:
                time.sleep(pause)
            key, value, headers = app_clients.risk_record(point)
            producer.send(risk_topic, key=key, value=value, headers=headers)
        producer.flush()
        producer.close()
        return ids

    log(f">> app: {bench.app_viewers} live graphs, {bench.app_points} points")
    watched = asyncio.run(
        app_clients.viewers(
            urls, bench.app_viewers, VIEWERS_PER_LOGIN, produce, VIEWER_SETTLE_S, VIEWER_WAIT_S
        )
    )
    appended = {
        app_clients.point_id(json.loads(r.value)): r.timestamp
        for r in read_every_record(settings, risk_topic)
    }
    delays = [
        (arrived - appended[point]) / 1000
        for v in watched
        for point, arrived in v.received.items()
        if point in appended
    ]
    every = sum(1 for v in watched if set(appended) <= set(v.received))
    errors = sorted({v.error for v in watched if v.error})
    return {
        "viewers": len(watched),
        "points": len(appended),
        "viewers_with_every_point": every,
        "viewer_errors": errors,
        **{f"point_{k}": v for k, v in quantiles(delays).items() if k != "count"},
    }


def run_app(settings: Settings, bench: BenchSettings, topics: Topics | None) -> dict:
    results: dict = {"users": bench.app_users, "tests": bench.app_tests}
    results["customers"] = app_data.customer_count(bench.app_tests)
    results["processes"] = PROCESSES
    results["argon2_ms"] = argon2_ms()
    viewers = bench.app_viewers > 0
    with PrivateRedis(bench.log_dir) as redis_server:
        log(f">> app: seeding {bench.app_users:,} users and {bench.app_tests:,} tests")
        began = time.monotonic()
        now_ms = int(time.time() * 1000)
        app_data.seed(redis_server.client, bench.app_users, bench.app_tests, now_ms, older=True)
        results["seed_s"] = round(time.monotonic() - began, 1)
        results["redis_used_memory_mb"] = round(
            redis_server.client.info("memory")["used_memory"] / 2**20
        )
        env = app_env(redis_server.port, settings, topics if viewers else None)
        apps: list[AppProcess] = []
        try:
            for n in range(PROCESSES):
                apps.append(AppProcess(f"app-{n}", env, bench.log_dir, bench.timeout_s))
                log(f"   app {n} up after {apps[-1].started_s:.2f} s")
            results["start_s"] = [round(a.started_s, 2) for a in apps]
            results["rss_after_start_mb"] = [round(a.memory_mb()) for a in apps]
            pass_s, slowest = wait_for_index_pass(redis_server.client, apps, bench.timeout_s)
            log(f"   index pass done after {pass_s:.1f} s")
            results["index_pass_s"] = round(pass_s, 1)
            results["health_max_ms_during_pass"] = round(slowest, 1)
            results["rss_after_index_pass_mb"] = [round(a.memory_mb()) for a in apps]
            results.update(measure_load(bench, [a.url for a in apps]))
            if viewers:
                urls, topic = [a.url for a in apps], env["KAFKA_RISK_TOPIC"]
                results.update(measure_viewers(settings, bench, urls, topic))
            results["rss_peak_mb"] = [round(a.memory_mb("VmHWM")) for a in apps]
        finally:
            for app in apps:
                app.stop()
    return results


def measure_load(bench: BenchSettings, urls: list[str]) -> dict:
    clients = min(bench.app_clients, app_data.caregivers(bench.app_tests))
    load = app_clients.Load(
        clients,
        bench.app_load_seconds,
        bench.app_think_ms / 1000,
        bench.app_login_rate,
        bench.app_users,
    )
    alone = asyncio.run(app_clients.logins_alone(urls, bench.app_users, LOGINS_ALONE))
    if alone.errors:
        raise RuntimeError(f"logins failed: {alone.errors[:3]}")
    log(f">> app: {clients} caregivers and {bench.app_login_rate} logins/s "
        f"for {bench.app_load_seconds} s")  # fmt: skip
    began = time.monotonic()
    timings = asyncio.run(app_clients.clinic(urls, bench.app_tests, load))
    elapsed = time.monotonic() - began
    if timings.errors:
        raise RuntimeError(f"{len(timings.errors)} requests failed, e.g. {timings.errors[:3]}")
    requests = sum(len(s) for s in timings.seconds.values())
    results = {"clients": clients, "load_s": round(elapsed, 1), "requests": requests}
    results["requests_per_s"] = round(requests / elapsed, 1)
    for kind, seconds in timings.seconds.items():
        results[kind] = quantiles(seconds)
    results["login_alone"] = quantiles(alone.seconds["login"])
    return results


def main() -> None:
    """This section alone, on its own Redis and ports; Kafka only for the viewers."""
    settings, bench = Settings(), BenchSettings()
    bench.log_dir.mkdir(parents=True, exist_ok=True)
    topics = Topics(settings) if bench.app_viewers > 0 else None
    try:
        results = {"machine": machine(), "app": run_app(settings, bench, topics)}
    finally:
        if topics is not None:
            topics.delete_all()
    print(json.dumps(results, indent=2))
    print("\n".join(app_rows(results["app"])), file=sys.stderr)


if __name__ == "__main__":
    main()
