"""The STEDI app under a login flood, over real HTTP against real Redis and Kafka: it is
rate-limited while /health and the live graph keep answering. (Bad input of every kind
is refused in-process: tests/unit/test_app_http.py.)"""

import threading
import time
import uuid

import httpx
import pytest

from tests.app_server import (
    ADMIN_EMAIL,
    ADMIN_PASSWORD,
    form_token,
    log_in,
)

pytestmark = pytest.mark.integration


@pytest.fixture
def fresh_app(stack, start_app):
    """An app of its own: the login counters start at zero."""
    return start_app()


class Probe(threading.Thread):
    """Keeps asking /health and the graph (page and live stream) while the flood runs."""

    def __init__(self, app, client: httpx.Client):
        super().__init__(daemon=True)
        self.app, self.client = app, client
        self.answers: list[int] = []
        self.failures: list[str] = []
        self.done = threading.Event()

    def run(self):
        while not self.done.is_set():
            for path in ("/health", "/graph"):
                try:
                    self.answers.append(self.client.get(path, timeout=5).status_code)
                except httpx.HTTPError as exc:
                    self.failures.append(f"{path}: {exc!r}")
            time.sleep(0.05)


def wrong_logins(app, emails: list[str]) -> list[int]:
    client = httpx.Client(base_url=app.url, timeout=30)
    token = form_token(client, "/login")
    codes = []
    for email in emails:
        fields = {"email": email, "password": "not the password", "csrf": token}
        codes.append(client.post("/login", data=fields).status_code)
    return codes


def test_fifty_wrong_logins_get_429_while_health_and_the_graph_keep_answering(fresh_app):
    app = fresh_app
    viewer, _ = log_in(app, ADMIN_EMAIL, ADMIN_PASSWORD)
    probe = Probe(app, viewer)
    with viewer.stream("GET", "/api/risk-stream") as stream:
        assert stream.status_code == 200
        probe.start()
        codes = wrong_logins(app, [ADMIN_EMAIL] * 50)
        probe.done.set()
        probe.join()
    assert codes[0] == 401 and 429 in codes
    first_refusal = codes.index(429)
    assert set(codes[:first_refusal]) == {401} and set(codes[first_refusal:]) == {429}
    assert probe.failures == [] and probe.answers and set(probe.answers) == {200}

    # The right password does not get through either while the account is locked.
    client = httpx.Client(base_url=app.url)
    fields = {"email": ADMIN_EMAIL, "password": ADMIN_PASSWORD,
              "csrf": form_token(client, "/login")}  # fmt: skip
    locked = client.post("/login", data=fields)
    assert locked.status_code == 429 and "Too many failed logins" in locked.text


def test_wrong_logins_over_many_accounts_from_one_client_get_429(fresh_app):
    emails = [f"guess.{i}.{uuid.uuid4().hex[:6]}@test.com" for i in range(50)]
    codes = wrong_logins(fresh_app, emails)
    assert codes[0] == 401 and 429 in codes
    assert set(codes[codes.index(429) :]) == {429}
    assert httpx.get(f"{fresh_app.url}/health", timeout=5).json() == {"status": "up"}
