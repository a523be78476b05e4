"""The benchmark's sizes and paths, from the environment, in one place."""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

from stedi.config import env_float, env_int

ROOT = Path(__file__).resolve().parents[1]


def _int(name: str, default: int) -> int:
    return env_int(name, default, positive=True)


@dataclass(frozen=True)
class BenchSettings:
    # Risk scores in the backlog that the join and the peer process.
    events: int = field(default_factory=lambda: _int("BENCH_EVENTS", 200_000))
    # Customers they join with (and the customers of the latency phase).
    customers: int = field(default_factory=lambda: _int("BENCH_CUSTOMERS", 1000))
    # Rapid step tests of these customers in turn that the risk-score job scores.
    score_tests: int = field(default_factory=lambda: _int("BENCH_SCORE_TESTS", 100_000))
    # The latency phase: the join as a stream, fed at a fixed rate for this long.
    latency_seconds: int = field(default_factory=lambda: _int("BENCH_LATENCY_SECONDS", 60))
    latency_rate: int = field(default_factory=lambda: _int("BENCH_LATENCY_RATE", 1000))
    # The feed's first seconds, left out of the steady-state latency: the JVM's JIT is
    # still compiling the join's hot paths then (its batches take twice as long).
    latency_warmup_seconds: int = field(
        default_factory=lambda: _int("BENCH_LATENCY_WARMUP_SECONDS", 15)
    )
    # The trickle: the join as a stream, a score and a test every BENCH_TRICKLE_INTERVAL_MS
    # (the app's real pace), its CPU measured for this long after the settling time.
    trickle_interval_ms: int = field(
        default_factory=lambda: _int("BENCH_TRICKLE_INTERVAL_MS", 2000)
    )
    trickle_settle_seconds: int = field(
        default_factory=lambda: _int("BENCH_TRICKLE_SETTLE_SECONDS", 30)
    )
    trickle_seconds: int = field(default_factory=lambda: _int("BENCH_TRICKLE_SECONDS", 60))
    # The three card wrappers side by side on empty topics, measured for this long after
    # the settling time.
    wrappers_settle_seconds: int = field(
        default_factory=lambda: _int("BENCH_WRAPPERS_SETTLE_SECONDS", 90)
    )
    wrappers_seconds: int = field(default_factory=lambda: _int("BENCH_WRAPPERS_SECONDS", 60))
    # Messages of Kafka's produce-to-consume round trip (one at a time).
    roundtrip_messages: int = field(default_factory=lambda: _int("BENCH_ROUNDTRIP_MESSAGES", 5000))
    # Single-member ZADDs through the Redis source.
    redis_records: int = field(default_factory=lambda: _int("BENCH_REDIS_RECORDS", 20_000))
    # The pipeline section: `make run` with the simulator at this speed (1: the app's real
    # pace, a score every 2 s), measured for this long after its first output.
    pipeline_speed: float = field(default_factory=lambda: env_float("BENCH_PIPELINE_SPEED", 1.0))
    pipeline_seconds: int = field(default_factory=lambda: _int("BENCH_PIPELINE_SECONDS", 120))
    # From the first output to the start of that window: the start-up's backlog is done.
    pipeline_settle_seconds: int = field(
        default_factory=lambda: _int("BENCH_PIPELINE_SETTLE_SECONDS", 15)
    )
    # The app section (issue 35): users and tests seeded in one Redis (as the app wrote them
    # before issue 35, so its start runs the index pass), two app processes on it.
    app_users: int = field(default_factory=lambda: _int("BENCH_APP_USERS", 100_000))
    app_tests: int = field(default_factory=lambda: _int("BENCH_APP_TESTS", 1_000_000))
    # Caregivers at once, loading pages and posting tests a think time apart on average, for
    # this long; meanwhile logins at this rate a second, each a new browser.
    app_clients: int = field(default_factory=lambda: _int("BENCH_APP_CLIENTS", 50))
    app_load_seconds: int = field(default_factory=lambda: _int("BENCH_APP_LOAD_SECONDS", 30))
    app_think_ms: int = field(default_factory=lambda: _int("BENCH_APP_THINK_MS", 500))
    app_login_rate: float = field(default_factory=lambda: env_float("BENCH_APP_LOGIN_RATE", 2.0))
    # Live graphs open at once (10 per login, as a browser's tabs), and the points written to
    # the graph's topic for them, at this rate. 0 viewers: no viewers, and no Kafka needed.
    app_viewers: int = field(default_factory=lambda: env_int("BENCH_APP_VIEWERS", 300))
    app_points: int = field(default_factory=lambda: _int("BENCH_APP_POINTS", 100))
    app_point_rate: int = field(default_factory=lambda: _int("BENCH_APP_POINT_RATE", 10))
    # Longest wait for one Spark run before it counts as failed.
    timeout_s: int = field(default_factory=lambda: _int("BENCH_TIMEOUT", 1800))
    results: Path = field(
        default_factory=lambda: Path(
            os.environ.get("BENCH_RESULTS", "").strip() or ROOT / "build" / "bench" / "results.json"
        )
    )

    @property
    def log_dir(self) -> Path:
        """Each Spark run's full output, next to the results."""
        return self.results.parent / "logs"
