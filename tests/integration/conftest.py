"""The app fixtures of the integration tests: one real app server per module, and apps
of a test's own (fresh counters, other settings)."""

import pytest

from tests.app_server import AppServer
from tests.stack_support import create_topics


@pytest.fixture(scope="module")
def app(stack, tmp_path_factory, request):
    """The module's app server, with the module's APP_ENV (none by default); the topics
    APP_ENV names (`*_TOPIC`) are created first."""
    env = getattr(request.module, "APP_ENV", {})
    topics = [value for name, value in env.items() if name.endswith("_TOPIC")]
    if topics:
        create_topics(stack, *topics)
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
