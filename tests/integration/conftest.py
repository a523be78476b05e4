"""The integration fixtures: the real local stack and the scripts' queries in this
process's Spark (tests/stack_support.py), the app servers."""

import pytest

from tests import stack_support
from tests.app_server import AppServer
from tests.stack_support import create_topics

# The stack's fixtures, for this folder only: a unit run never reaches for services.
stack = stack_support.stack
redis_client = stack_support.redis_client
unique = stack_support.unique
topics = stack_support.topics
kafka_spark = stack_support.kafka_spark


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
