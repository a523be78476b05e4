"""The app keeps serving when Redis or Kafka is away, and says so (details after login);
sessions and their live graphs expire."""

import time

import httpx
import pytest

from tests.app_server import (
    ADMIN_EMAIL,
    ADMIN_PASSWORD,
    csrf_of,
    free_port,
    logged_in,
)

pytestmark = pytest.mark.integration


@pytest.fixture
def app_without_services(start_app):
    env = {
        "REDIS_PORT": str(free_port()),
        "KAFKA_BOOTSTRAP_SERVERS": f"127.0.0.1:{free_port()}",
    }
    return start_app(env, ready_status=503)


def test_without_redis_and_kafka_the_app_serves_and_says_it_is_down(app_without_services):
    url = app_without_services.url
    health = httpx.get(f"{url}/health")
    assert health.status_code == 503 and health.json() == {"status": "down"}

    client = httpx.Client(base_url=url)
    login_page = client.get("/login")
    assert login_page.status_code == 200
    response = client.post(
        "/login",
        data={"email": ADMIN_EMAIL, "password": ADMIN_PASSWORD, "csrf": csrf_of(login_page.text)},
    )
    assert response.status_code == 503
    assert "Redis is unavailable right now" in response.text


@pytest.fixture
def app_without_kafka(stack, start_app):
    return start_app({"KAFKA_BOOTSTRAP_SERVERS": f"127.0.0.1:{free_port()}"})


def test_without_kafka_health_names_the_problem_only_to_a_logged_in_user(app_without_kafka):
    client, _ = logged_in(app_without_kafka)
    deadline = time.monotonic() + 30
    while not any("Kafka unavailable" in p for p in client.get("/health").json()["problems"]):
        assert time.monotonic() < deadline, "Kafka's absence was never reported"
        time.sleep(1)
    anonymous = httpx.get(f"{app_without_kafka.url}/health")
    assert anonymous.status_code == 200 and anonymous.json() == {"status": "up"}


@pytest.fixture
def short_session_app(stack, start_app):
    return start_app({"STEDI_SESSION_SECONDS": "2"})


def test_a_session_and_its_live_graph_end_after_its_lifetime(short_session_app):
    client, _ = logged_in(short_session_app)
    assert client.get("/api/customers").status_code == 200
    with client.stream("GET", "/api/risk-stream") as stream:
        try:
            lines = list(stream.iter_lines())  # returns once the server ends the stream
        except httpx.ReadTimeout:
            pytest.fail("the stream outlived its session")
    assert "event: round" in lines
    assert client.get("/api/customers").status_code == 401
    assert client.get("/api/risk-stream").status_code == 401
