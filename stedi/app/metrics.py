"""The app's `/metrics`, in Prometheus' text format (prometheus_client).

Each value is read from the app's services when Prometheus scrapes, so nothing is
counted twice and a scrape costs a few attribute reads. Counters are totals since
the app started. No value carries a label with a name, an email or an address.

Reachable without login from loopback only (a Prometheus on the same host), or
from anywhere with `Authorization: Bearer <STEDI_METRICS_TOKEN>` (compose's
Prometheus, a proxy); a logged-in user may read it too.
"""

from __future__ import annotations

import hmac
from collections.abc import Iterator

from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.exposition import CONTENT_TYPE_LATEST
from prometheus_client.registry import Collector
from starlette.datastructures import State
from starlette.requests import Request
from starlette.responses import Response

from stedi.app.auth import current_user
from stedi.app.http import client_address

LOOPBACK = {"127.0.0.1", "::1"}


class AppCollector(Collector):
    """The app's health, from its services' own totals and sizes (app.state)."""

    def __init__(self, state: State):
        self.state = state

    def collect(self) -> Iterator[Metric]:
        state = self.state
        limits, publisher = state.login_limits, state.publisher
        yield CounterMetricFamily(
            "stedi_app_tests_stored", "New rapid step tests stored", state.store.tests_stored
        )
        yield CounterMetricFamily(
            "stedi_app_scores_published",
            "Risk scores Kafka confirmed on the events topic",
            publisher.published,
        )
        yield CounterMetricFamily(
            "stedi_app_score_send_failures",
            "Attempts to send the outbox that failed (Kafka unavailable); each is retried",
            publisher.failed_sends,
        )
        yield GaugeMetricFamily(
            "stedi_app_outbox_scores", "Risk scores waiting to be sent", len(publisher.outbox)
        )
        yield GaugeMetricFamily(
            "stedi_app_graph_streams", "Live graph streams open", len(state.feed.streams)
        )
        yield GaugeMetricFamily(
            "stedi_app_simulations_running", "Simulations running", state.simulations.running()
        )
        yield CounterMetricFamily(
            "stedi_app_login_failures",
            "Logins with a wrong email or password",
            limits.wrong_passwords,
        )
        refusals = CounterMetricFamily(
            "stedi_app_refusals",
            "Login and sign-up attempts refused by their limits (429)",
            labels=["form"],
        )
        refusals.add_metric(["login"], limits.refused)
        refusals.add_metric(["signup"], state.signup_limit.refused)
        yield refusals
        counts = state.quality.counts
        yield CounterMetricFamily(
            "stedi_app_quality_checked", "Scores the risk-score job checked", counts.checked
        )
        yield CounterMetricFamily(
            "stedi_app_quality_agreeing",
            "Scores the risk-score job computed the same as the app",
            counts.agreeing,
        )
        readers = {"kafka_publisher": publisher.error, "graph_feed": state.feed.error}
        for name, problem in readers.items():
            yield GaugeMetricFamily(
                f"stedi_app_{name}_up",
                f"1 unless the {name} reports a Kafka problem",
                0 if problem else 1,
            )


def registry_for(state: State) -> CollectorRegistry:
    """A registry of the app's own (not the process-wide default: one per app, for tests)."""
    registry = CollectorRegistry(auto_describe=False)
    registry.register(AppCollector(state))
    return registry


def token_ok(request: Request, token: str) -> bool:
    sent = request.headers.get("authorization", "")
    return bool(token) and hmac.compare_digest(sent.encode(), f"Bearer {token}".encode())


async def metrics(request: Request) -> Response:
    state = request.app.state
    allowed = (
        client_address(request) in LOOPBACK
        or token_ok(request, state.settings.metrics_token)
        or await current_user(request) is not None
    )
    if not allowed:
        return Response(
            "metrics: from loopback, with the token, or logged in\n",
            status_code=403,
            media_type="text/plain",
        )
    return Response(generate_latest(state.metrics), media_type=CONTENT_TYPE_LATEST)
