"""The entry scripts, imported as modules by the tests (they are not in a package), and
their queries run in the test process's Spark (no spark-submit JVM of their own)."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from types import ModuleType
from unittest import mock

from stedi.stack.engine import load_script

redis_job = load_script("sparkpyrediskafkastreamtoconsole.py")
events_job = load_script("sparkpyeventskafkastreamtoconsole.py")
join_job = load_script("sparkpykafkajoin.py")
score_job = load_script("sparkpyriskscore.py")


class InProcessJobs:
    """Runs an entry script's query in `spark`'s SparkContext, as `make run`'s engine
    does: the script's `start_query` in a session of its own (`newSession()`), with `env`
    over the environment. The session needs Spark's Kafka connector: ask for the
    `kafka_spark` fixture, which makes sure of it."""

    def __init__(self, spark):
        self.spark = spark

    def _start(self, module: ModuleType, env: dict, available_now: bool):
        with mock.patch.dict("os.environ", env):
            return module.start_query(self.spark.newSession(), available_now)

    def __call__(self, module: ModuleType, env: dict) -> None:
        """`<wrapper> --available-now`: runs until the query ends (raises if it fails)."""
        self._start(module, env, True).awaitTermination()

    @contextlib.contextmanager
    def streaming(self, module: ModuleType, env: dict) -> Iterator[None]:
        """`<wrapper>` as a stream until the block ends."""
        query = self._start(module, env, False)
        try:
            yield
        finally:
            query.stop()
