"""The entry scripts, imported as modules by the tests (they are not in a package), and
their queries run in the test process's Spark (no spark-submit JVM of their own)."""

from __future__ import annotations

import contextlib
import io
import threading
import time
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
    does: the script's settings from `env` over the environment, and a session of its
    own (`newSession()` with the script's `session_conf`). The session needs Spark's
    Kafka connector: ask for the `kafka_spark` fixture, which makes sure of it."""

    def __init__(self, spark):
        self.spark = spark

    def _session(self, module: ModuleType, env: dict):
        with mock.patch.dict("os.environ", env):
            settings = module.Settings()
        session = self.spark.newSession()
        for key, value in module.session_conf(settings).items():
            session.conf.set(key, value)
        return session, settings

    def __call__(self, module: ModuleType, env: dict) -> str:
        """`<wrapper> --available-now`: runs until the query ends; the lines it printed."""
        session, settings = self._session(module, env)
        printed = io.StringIO()
        with contextlib.redirect_stdout(printed):
            module.run(session, settings, True)
        return printed.getvalue()

    @contextlib.contextmanager
    def streaming(self, module: ModuleType, env: dict) -> Iterator[None]:
        """`<wrapper>` as a stream, in a thread, until the block ends."""
        session, settings = self._session(module, env)
        thread = threading.Thread(target=module.run, args=(session, settings, False), daemon=True)
        thread.start()
        try:
            yield
        finally:
            deadline = time.monotonic() + 60
            while thread.is_alive() and time.monotonic() < deadline:
                for query in session.streams.active:
                    query.stop()
                thread.join(timeout=1)
