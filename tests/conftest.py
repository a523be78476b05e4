"""Shared fixtures: one local Spark session for the whole run."""

import os

import pytest

# The real local stack (Kafka, Redis, the Redis source) for integration and browser tests.
pytest_plugins = ["tests.stack_support"]


@pytest.fixture(scope="session")
def spark():
    """local[2] with the join job's own session settings (state store, partitions, UTC), UI off."""
    os.environ.setdefault(
        "PYSPARK_SUBMIT_ARGS",
        "--conf spark.ui.enabled=false --conf spark.ui.showConsoleProgress=false pyspark-shell",
    )
    from tests.scripts import join_job

    session = join_job.build_session(join_job.Settings(), master="local[2]")
    yield session
    session.stop()
