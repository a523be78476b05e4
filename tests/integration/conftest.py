"""The integration fixtures: the real local stack (tests/stack_support.py), the app
servers, and the entry scripts' queries run in this process's Spark session."""

import contextlib
import io
from unittest import mock

import pytest

from tests import stack_support
from tests.app_server import AppServer
from tests.stack_support import create_topics

# The stack's fixtures, for this folder only: a unit run never reaches for services.
stack = stack_support.stack
redis_client = stack_support.redis_client
unique = stack_support.unique
topics = stack_support.topics


@pytest.fixture(scope="module")
def app(stack, tmp_path_factory, request):
    """The module's app server, with the module's APP_ENV (none by default); the topics
    APP_ENV names (`*_TOPIC`) are created first."""
    env = getattr(request.module, "APP_ENV", {})
    names = [value for name, value in env.items() if name.endswith("_TOPIC")]
    if names:
        create_topics(stack, *names)
    server = AppServer(env, tmp_path_factory.mktemp("app") / "app.log")
    yield server
    server.stop()


@pytest.fixture
def start_app(tmp_path):
    """Starts app servers of one test's own (`start_app(env, ready_status=200)`), each with
    counters at zero, and stops them after it. Needs no stack: ask for `stack` too."""
    servers = []

    def start(env: dict | None = None, ready_status: int = 200) -> AppServer:
        log = tmp_path / f"app-{len(servers)}.log"
        servers.append(AppServer(env or {}, log, ready_status))
        return servers[-1]

    yield start
    for server in servers:
        server.stop()


@pytest.fixture
def kafka_spark(stack, spark):  # the stack first: it stops after the session
    """Runs an entry script's query on the real Kafka in this process, as
    `<wrapper> --available-now` would, without a spark-submit JVM of its own:
    `kafka_spark(module, env)` returns the lines the script printed.

    The job reads its settings from `env` over the environment, in a session of its
    own (a `newSession()` of the run's one SparkContext with the script's
    `session_conf`), as `make run`'s engine gives each job. For tests of a query on
    Kafka; a test of a wrapper or of spark-submit itself runs the process.
    """

    def run(module, env: dict) -> str:
        with mock.patch.dict("os.environ", env):
            settings = module.Settings()
        session = spark.newSession()
        for key, value in module.session_conf(settings).items():
            session.conf.set(key, value)
        printed = io.StringIO()
        with contextlib.redirect_stdout(printed):
            module.run(session, settings, True)
        return printed.getvalue()

    return run
