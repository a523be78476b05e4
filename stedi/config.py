"""Every setting of the app, the Redis source and the local stack, read from the environment.

The Spark jobs read their own settings (same variable names); the topic names
are here too because the stack creates the topics. The same variable names
apply in local mode and in Docker.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field


def _env(name: str, default: str) -> str:
    value = os.environ.get(name, "").strip()
    return value or default


def _env_number(name, default, parse, kind: str, positive: bool):
    raw = _env(name, str(default))
    try:
        value = parse(raw)
    except ValueError:
        raise SystemExit(f"{name}={raw!r} is not {kind}") from None
    if positive and value <= 0:
        raise SystemExit(f"{name}={raw!r} must be above zero")
    return value


def env_int(name: str, default: int, positive: bool = False) -> int:
    """An integer setting; a clear exit (not a traceback) when it is not one."""
    return _env_number(name, default, int, "an integer", positive)


def env_float(name: str, default: float) -> float:
    """A number above zero; a clear exit when it is not one."""
    return _env_number(name, default, float, "a number", positive=True)


@dataclass(frozen=True)
class Settings:
    """What the Redis source, the app and the stack read (the README's settings table)."""

    # KAFKA_BROKER is the original STEDI app's name for it; KAFKA_BOOTSTRAP_SERVERS wins if both.
    kafka_bootstrap_servers: str = field(
        default_factory=lambda: _env(
            "KAFKA_BOOTSTRAP_SERVERS", _env("KAFKA_BROKER", "localhost:9092")
        )
    )
    # The local stack's KRaft controller listener (`make up` only; compose has its own).
    kafka_controller_port: int = field(
        default_factory=lambda: env_int("STEDI_KAFKA_CONTROLLER_PORT", 9093)
    )
    # How many KRaft nodes (each a broker and a controller) `make up` starts on loopback; node
    # i listens on the bootstrap port + 2i and the controller port + 2i (docs/scaling.md).
    kafka_brokers: int = field(
        default_factory=lambda: env_int("STEDI_KAFKA_BROKERS", 1, positive=True)
    )
    # Workers of a local Spark standalone cluster for make run's engine; 0: local[*].
    spark_workers: int = field(default_factory=lambda: env_int("STEDI_SPARK_WORKERS", 0))
    # That cluster's master: its port, and its web UI's (worker i's UI is this + i).
    spark_master_port: int = field(
        default_factory=lambda: env_int("STEDI_SPARK_MASTER_PORT", 7077, positive=True)
    )
    spark_webui_port: int = field(
        default_factory=lambda: env_int("STEDI_SPARK_WEBUI_PORT", 8080, positive=True)
    )
    redis_host: str = field(default_factory=lambda: _env("REDIS_HOST", "localhost"))
    redis_port: int = field(default_factory=lambda: env_int("REDIS_PORT", 6379))
    redis_password: str | None = field(
        default_factory=lambda: _env("REDIS_PASSWORD", "") or None, repr=False
    )
    redis_topic: str = field(default_factory=lambda: _env("STEDI_REDIS_TOPIC", "redis-server"))
    events_topic: str = field(default_factory=lambda: _env("STEDI_EVENTS_TOPIC", "stedi-events"))
    risk_topic: str = field(default_factory=lambda: _env("KAFKA_RISK_TOPIC", "customer-risk"))
    # sparkpyriskscore.py's outputs: its scores, and their check against the app's.
    spark_risk_topic: str = field(
        default_factory=lambda: _env("STEDI_SPARK_RISK_TOPIC", "stedi-risk-spark")
    )
    quality_topic: str = field(
        default_factory=lambda: _env("STEDI_RISK_QUALITY_TOPIC", "risk-quality")
    )
    dead_letter_topic: str = field(
        default_factory=lambda: _env("STEDI_DEAD_LETTER_TOPIC", "stedi-dead-letter")
    )
    # The STEDI app.
    app_port: int = field(default_factory=lambda: env_int("STEDI_APP_PORT", 4567))
    # Loopback only, except in a container, whose port Docker publishes on the host's loopback.
    app_host: str = field(default_factory=lambda: _env("STEDI_APP_HOST", "127.0.0.1"))
    simulate: bool = field(default_factory=lambda: _env("STEDI_SIMULATE", "0") == "1")
    sim_speed: float = field(default_factory=lambda: env_float("STEDI_SIM_SPEED", 1.0))
    session_seconds: int = field(default_factory=lambda: env_int("STEDI_SESSION_SECONDS", 8 * 3600))
    # Points a live graph may fall behind before the app ends its stream (the browser reconnects).
    stream_buffer: int = field(default_factory=lambda: env_int("STEDI_STREAM_BUFFER", 1000))
    # The app's limits (docs/architecture.md, "The app's limits").
    # Failed logins (and sign-ups) are counted in windows of this length.
    login_window_seconds: int = field(
        default_factory=lambda: env_int("STEDI_LOGIN_WINDOW_SECONDS", 300, positive=True)
    )
    # Sign-ups per client address and window.
    signups_per_client: int = field(
        default_factory=lambda: env_int("STEDI_SIGNUPS_PER_CLIENT", 100, positive=True)
    )
    # Customers one user may own (the simulator's included): bounds the cost of their pages.
    customers_per_user: int = field(
        default_factory=lambda: env_int("STEDI_CUSTOMERS_PER_USER", 5000, positive=True)
    )
    # A user's simulation stops after this long, or with their last session.
    sim_max_seconds: int = field(
        default_factory=lambda: env_int("STEDI_SIM_MAX_SECONDS", 4 * 3600, positive=True)
    )
    # The proxy whose X-Forwarded-For/-Proto uvicorn believes (its address, a comma-separated
    # list, or *); empty: none, the client is the socket's peer and those headers are ignored.
    trusted_proxy: str = field(default_factory=lambda: _env("STEDI_TRUSTED_PROXY", ""))
    # 1: cookies only over HTTPS (set it when a TLS proxy is in front).
    secure_cookies: bool = field(default_factory=lambda: _env("STEDI_SECURE_COOKIES", "0") == "1")
    # Signs session cookies; empty means a random key per start (sessions end on restart).
    secret_key: str = field(default_factory=lambda: _env("STEDI_SECRET_KEY", ""), repr=False)
    # Lets a scraper read the app's /metrics from another host (Authorization: Bearer <it>);
    # unset: only from loopback, or logged in.
    metrics_token: str = field(default_factory=lambda: _env("STEDI_METRICS_TOKEN", ""), repr=False)
    admin_user: str | None = field(default_factory=lambda: _env("STEDI_ADMIN_USER", "") or None)
    admin_password: str | None = field(
        default_factory=lambda: _env("STEDI_ADMIN_PASSWORD", "") or None, repr=False
    )
    # The Redis source's record of how far it got (see stedi/redis_source/publisher.py).
    redis_source_state: str = field(
        default_factory=lambda: _env(
            "STEDI_REDIS_SOURCE_STATE", os.path.abspath("build/stack/redis-source.json")
        )
    )
    # How long the Redis source's producer tries to deliver a record before it reports a
    # failure; the source then goes back to its last confirmed position and retries.
    redis_source_delivery_timeout_ms: int = field(
        default_factory=lambda: env_int("STEDI_REDIS_SOURCE_DELIVERY_TIMEOUT_MS", 120000)
    )
    # make run's Spark engine serves its jobs' metrics (lag, batch age) here, on loopback;
    # the app's status panel reads them (stedi/stack/engine_metrics.py). 0: none.
    spark_metrics_port: int = field(
        default_factory=lambda: env_int("STEDI_SPARK_METRICS_PORT", 9122)
    )
    # The local stack's folder, where the app's status panel finds the Spark drivers run alone
    # (stedi/stack/drivers.py); the stack itself reads it in stedi/stack/services.py.
    stack_dir: str = field(
        default_factory=lambda: os.path.abspath(_env("STEDI_STACK_DIR", "build/stack"))
    )
    # The Redis source's Prometheus metrics (stedi/redis_source/metrics.py); port 0: none.
    redis_source_metrics_port: int = field(
        default_factory=lambda: env_int("STEDI_REDIS_SOURCE_METRICS_PORT", 9121)
    )
    # Loopback; compose sets 0.0.0.0 so that its Prometheus reaches it (not published).
    redis_source_metrics_host: str = field(
        default_factory=lambda: _env("STEDI_REDIS_SOURCE_METRICS_HOST", "127.0.0.1")
    )
