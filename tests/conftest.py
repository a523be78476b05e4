"""Shared fixtures: one local Spark session for the whole run."""

import pytest

from stedi.config import Settings
from stedi.sparkjob import build_session

# The real local stack (Kafka, Redis, the Redis source) for integration and browser tests.
pytest_plugins = ["tests.stack_support"]


@pytest.fixture(scope="session")
def spark():
    """local[2], the jobs' own session settings (RocksDB state store, UTC), UI off."""
    import os

    os.environ.setdefault("PYSPARK_SUBMIT_ARGS", "--conf spark.ui.enabled=false pyspark-shell")
    session = build_session("stedi-tests", Settings(), master="local[2]")
    yield session
    session.stop()
