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
