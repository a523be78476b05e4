"""The integration fixtures: the real local stack and the scripts' queries in this
process's Spark (tests/stack_support.py), the app servers."""

import pytest

from tests import stack_support
from tests.app_server import AppServer
from tests.bare_unit_run import BareUnitRun
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


# The unit tier's own summary line, from its run in the bare checkout.
UNIT_SUMMARY = pytest.StashKey[str]()
# The cluster fault test's heal times (tests/integration/test_cluster_faults.py).
HEAL_TIMES = pytest.StashKey[list]()


def pytest_terminal_summary(terminalreporter, config):
    for line in config.stash.get(HEAL_TIMES, []):
        terminalreporter.write_line(f"cluster faults: {line}")
    if UNIT_SUMMARY in config.stash:
        terminalreporter.write_line(
            f"unit tier (make unit in a bare checkout): {config.stash[UNIT_SUMMARY]}"
        )


@pytest.fixture(scope="session")
def bare_unit_run(tmp_path_factory):
    """`make unit` in a bare checkout without the test tools (tests/bare_unit_run.py)."""
    run = BareUnitRun(tmp_path_factory.mktemp("bare-unit"))
    yield run
    run.stop()


@pytest.fixture(scope="session", autouse=True)
def start_the_bare_unit_run_early(request):
    """When its test is selected, `make unit`'s bare run starts with this tier's first
    test: it runs beside the tier's waits on services instead of after them."""
    if any("bare_unit_run" in item.fixturenames for item in request.session.items):
        request.getfixturevalue("bare_unit_run")
