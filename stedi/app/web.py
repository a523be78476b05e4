"""The STEDI web app: pages, JSON API, live risk stream. Starlette + Jinja2 (autoescaped).

Every page and API but /login, /signup, /health and /metrics (stedi/app/metrics.py)
needs a logged-in session (stedi/app/auth.py). A user sees and tests only the customers
they created (or their simulation did); the risk graph is the team-wide view, by birth year and
score, without names. `create_app` takes its services (stedi/app/services.py), so
tests can run it in-process.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import secrets
import time
from pathlib import Path

from redis.exceptions import RedisError
from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.middleware import Middleware
from starlette.middleware.sessions import SessionMiddleware
from starlette.requests import Request
from starlette.responses import JSONResponse, RedirectResponse, Response, StreamingResponse
from starlette.routing import Mount, Route
from starlette.staticfiles import StaticFiles

from stedi.app import history, validation
from stedi.app.attempts import Attempts, LoginLimits, SignupLimit
from stedi.app.auth import current_user, login_page, login_required, logout, signup_page
from stedi.app.devices import DeviceCookies
from stedi.app.errors import EXCEPTION_HANDLERS
from stedi.app.first_start import prepare_redis
from stedi.app.http import HERE, json_body, page, read_form
from stedi.app.kafka_io import GRAPH_ROUND, RiskFeed
from stedi.app.limits import MAX_STREAMS, BodyLimit, SecurityHeaders
from stedi.app.metrics import metrics, registry_for
from stedi.app.pipeline_status import PipelineStatus
from stedi.app.reindex import IndexPass
from stedi.app.risk import Risk, risk_event, risk_record
from stedi.app.services import Services, connect
from stedi.app.simulation_slots import SimulationSlots
from stedi.app.simulator import Simulations
from stedi.app.store import CustomerQuota, Store, adopter
from stedi.app.validation import InvalidInput
from stedi.config import Settings

log = logging.getLogger("stedi.app")
ROOT = HERE.parents[1]
# Installed by `make install` (npm); the Docker image copies it elsewhere and sets the variable.
CHART_JS = Path(
    os.environ.get("STEDI_CHART_JS")
    or ROOT / "node_modules" / "chart.js" / "dist" / "chart.umd.min.js"
)
# The original's title said "below zero is improvement", the opposite of its own
# score (previous two tests minus recent two): the subtitle follows the numbers.
GRAPH_TITLE = "STEDI Population Risk Change by Birth Year"
GRAPH_SUBTITLE = "Above zero: improved (faster tests). Below zero: deteriorated (slower tests)."


# --- pages: a user sees only their own customers ----------------------------------------
@login_required
async def home(request: Request):
    return RedirectResponse("/timer", status_code=303)


@login_required
async def timer_page(request: Request):
    store: Store = request.app.state.store
    customers = await store.customers(request.state.user)
    latest = await store.latest_tests([c["email"] for c in customers])
    # The switch comes with its state: a click before timer.js's first refresh must not be
    # undone by it.
    simulation = await request.app.state.simulations.state(request.state.user)
    return page(
        request,
        "timer.html",
        customers=history.last_tests(customers, latest),
        simulation=simulation,
    )


@login_required
async def new_customer_page(request: Request):
    if request.method == "GET":
        return page(request, "customer.html", form={})
    form = await read_form(request)
    try:
        customer = validation.customer(form)
        await request.app.state.store.add_customer(request.state.user, customer)
    except (InvalidInput, CustomerQuota) as exc:
        shown = {k: v[: validation.MAX_EMAIL] for k, v in form.items() if k != "csrf"}
        status = 403 if isinstance(exc, CustomerQuota) else 400
        return page(request, "customer.html", status, error=str(exc), form=shown)
    return page(request, "customer.html", created=customer, form={})


async def own_customer(request: Request) -> dict:
    """The path's customer if it is the user's own; 404 otherwise (whether or not it exists)."""
    email = request.path_params["email"]
    store: Store = request.app.state.store
    customer = None
    if len(email) <= validation.MAX_EMAIL:
        customer = await store.customer(request.state.user, email)
    if customer is None:
        raise HTTPException(404, "No such customer among yours.")
    return customer


async def own_customer_history(request: Request) -> dict:
    """The page `?page=` of the user's own customer's tests (stedi/app/history.py)."""
    customer = await own_customer(request)
    number = validation.page_number(request.query_params.get("page", "1"))
    rows = await request.app.state.store.customer_tests(customer["email"])
    return history.customer_history(customer, rows, number)


@login_required
async def customer_page(request: Request):
    view = await own_customer_history(request)
    return page(request, "customer_tests.html", view=view, subtitle=GRAPH_SUBTITLE)


@login_required
async def graph_page(request: Request):
    return page(
        request,
        "graph.html",
        round_size=GRAPH_ROUND,
        title=GRAPH_TITLE,
        subtitle=GRAPH_SUBTITLE,
        quality=request.app.state.quality.line(),
    )


# --- JSON API ------------------------------------------------------------------------------
@login_required
async def api_customers(request: Request):
    store: Store = request.app.state.store
    if request.method == "GET":
        return JSONResponse(await store.customers(request.state.user))
    customer = validation.customer(await json_body(request))
    return JSONResponse(await store.add_customer(request.state.user, customer), status_code=201)


@login_required
async def api_customer(request: Request):
    return JSONResponse(await own_customer_history(request))


@login_required
async def api_customer_risk(request: Request):
    """The original app's per-customer score lookup, in the `stedi-events` format."""
    customer = await own_customer(request)
    rows = await request.app.state.store.customer_tests(customer["email"])
    risk = history.current_risk(rows)
    if risk is None:
        raise HTTPException(404, "No risk score yet: a customer has one from the 4th test on.")
    return JSONResponse(risk_record(customer["email"], risk))


@login_required
async def api_tests(request: Request):
    store: Store = request.app.state.store
    body = await json_body(request)
    email = validation.text(body.get("email", ""), "email", validation.MAX_EMAIL)
    customer = await store.customer(request.state.user, email)
    if customer is None:
        raise HTTPException(404, "No such customer among yours: create the customer first.")
    start, stop = validation.test_times(body, int(time.time() * 1000))
    test, risk, new = await store.add_test(customer, start, stop)
    score = None if risk is None else risk.score
    if new:
        log.info(
            "test stored for %s (%d ms), risk score %s", customer["email"], stop - start, score
        )
        if risk is not None:
            request.app.state.publish_risk(customer["email"], risk)
    # A test posted again (a retry, a double click) gets the same answer and changes nothing.
    return JSONResponse({"test": test, "score": score}, status_code=201)


@login_required
async def api_simulation(request: Request):
    simulations: Simulations = request.app.state.simulations
    user = request.state.user
    if request.method == "POST":
        active = (await json_body(request)).get("active")
        if not isinstance(active, bool):
            raise InvalidInput("active must be true or false.")
        if active:
            await simulations.activate(user)
        else:
            await simulations.stop(user)
    state = await simulations.state(user)
    return JSONResponse({"active": state.running, "testsRun": state.tests_run})


@login_required
async def api_pipeline_status(request: Request):
    """The graph page's status panel (stedi/app/pipeline_status.py): from the pipeline's
    metrics, scraped once for all viewers; no Kafka read."""
    return JSONResponse({"lines": await request.app.state.pipeline_status.current()})


async def health(request: Request):
    """Up, starting or down for anyone (container healthchecks); what is wrong only after
    login. Starting: Redis answers, but the first start (keys, admin, history) is not done,
    so a login could still fail."""
    state = request.app.state
    try:
        redis_ok = await asyncio.wait_for(state.store.ping(), 2)
        user = await current_user(request)
    except (RedisError, OSError, asyncio.TimeoutError):
        redis_ok, user = False, None
    status = "down" if not redis_ok else "up" if state.prepared.done() else "starting"
    status_code = 200 if status == "up" else 503
    if user is None:
        return JSONResponse({"status": status}, status_code=status_code)
    problems = [p for p in (state.publisher.error, state.feed.error) if p]
    problems += state.simulations.errors()
    if not redis_ok:
        problems.insert(0, "Redis unavailable: retrying")
    body = {"status": status, "redis": redis_ok, "problems": problems}
    if state.index_pass.progress:  # the one-time pass over older data (stedi/app/reindex.py)
        body["indexing"] = state.index_pass.progress
    return JSONResponse(body, status_code=status_code)


KEEP_ALIVE_SECONDS = 15


async def session_alive(store: Store, session_id: str) -> bool:
    try:
        return await store.session_user(session_id) is not None
    except RedisError:
        return True  # cannot tell while Redis is away: the session's expiry still holds


@login_required
async def risk_stream(request: Request):
    """Server-Sent Events: the current round, then every new point. The stream ends with its
    session (logout or expiry) and when the browser falls too far behind; the browser then
    reconnects (or goes to the login page)."""
    feed: RiskFeed = request.app.state.feed
    if len(feed.streams) >= MAX_STREAMS:
        raise HTTPException(503, "Too many live graphs are open: try again later.")
    store: Store = request.app.state.store
    session_id = request.session["sid"]
    ends = request.session["since"] + request.app.state.settings.session_seconds
    stream = feed.subscribe(session_id)

    async def events():
        try:
            yield f"retry: 2000\nevent: round\ndata: {json.dumps(feed.points)}\n\n"
            while (remaining := ends - time.time()) > 0:
                try:
                    point = await stream.next(min(KEEP_ALIVE_SECONDS, remaining))
                except asyncio.TimeoutError:
                    if not await session_alive(store, session_id):
                        return  # ended elsewhere
                    yield ": keep-alive\n\n"
                    continue
                if point is None:
                    return
                yield f"event: point\ndata: {json.dumps(point)}\n\n"
        finally:
            feed.unsubscribe(stream)

    headers = {"Cache-Control": "no-cache", "X-Accel-Buffering": "no"}
    return StreamingResponse(events(), media_type="text/event-stream", headers=headers)


async def chart_js(request: Request):
    if not CHART_JS.exists():
        return Response("chart.js is not installed: run `make install`", status_code=500)
    return Response(CHART_JS.read_bytes(), media_type="text/javascript")


# --- the app ---------------------------------------------------------------------------------
async def cancel_and_wait(*tasks: asyncio.Task) -> None:
    for task in tasks:
        task.cancel()
    await asyncio.wait(tasks)


def create_app(settings: Settings | None = None, services: Services | None = None) -> Starlette:
    """The app; without `services`, it connects to the ones the settings name at start."""
    settings = settings or Settings()
    secret = settings.secret_key or secrets.token_urlsafe(32)

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette):
        used = services or connect(settings)
        store, publisher, feed = used.store, used.publisher, used.feed

        def publish_risk(email: str, risk: Risk) -> None:
            publisher.publish(*risk_event(email, risk))

        simulations = Simulations(
            store,
            publish_risk,
            SimulationSlots(used.redis),
            speed=settings.sim_speed,
            max_seconds=settings.sim_max_seconds,
        )
        app.state.settings, app.state.store, app.state.simulations = settings, store, simulations
        app.state.publisher, app.state.feed, app.state.quality = publisher, feed, used.quality
        app.state.publish_risk = publish_risk
        # Counted in Redis: every app process on it enforces the same limits.
        attempts = Attempts(used.redis, settings.login_window_seconds)
        app.state.login_limits = LoginLimits(attempts)
        app.state.signup_limit = SignupLimit(attempts, settings.signups_per_client)
        app.state.index_pass = IndexPass(store, adopter(settings.admin_user))
        app.state.devices = DeviceCookies(secret)
        app.state.metrics = registry_for(app.state)
        app.state.pipeline_status = PipelineStatus.of(settings)
        # Shutdown runs these callbacks last to first, each even when one before it fails.
        async with contextlib.AsyncExitStack() as shutdown:
            shutdown.push_async_callback(used.redis.aclose)
            shutdown.callback(publisher.close)  # sends what still waits in the outbox
            shutdown.callback(used.quality.close)
            shutdown.callback(feed.close)
            publisher_task = asyncio.create_task(publisher.run(), name="risk-publisher")
            shutdown.callback(publisher_task.cancel)
            shutdown.push_async_callback(simulations.stop_all)
            # In the background: the app serves (and says Redis is down) while Redis is away.
            prepare_task = asyncio.create_task(
                prepare_redis(store, settings, simulations, app.state.index_pass),
                name="prepare-redis",
            )
            app.state.prepared = prepare_task  # /health says "starting" until it is done
            reaper_task = asyncio.create_task(simulations.reap_forever(), name="simulation-reaper")
            shutdown.push_async_callback(app.state.index_pass.stop)
            # First at shutdown, so neither can start a simulation while the others stop.
            shutdown.push_async_callback(cancel_and_wait, prepare_task, reaper_task)
            feed.start()
            used.quality.start()
            log.info(
                "STEDI app on http://%s:%d; Kafka at %s",
                settings.app_host,
                settings.app_port,
                settings.kafka_bootstrap_servers,
            )
            yield

    routes = [
        Route("/", home),
        Route("/login", login_page, methods=["GET", "POST"]),
        Route("/signup", signup_page, methods=["GET", "POST"]),
        Route("/logout", logout, methods=["POST"]),
        Route("/timer", timer_page),
        Route("/customers/new", new_customer_page, methods=["GET", "POST"]),
        Route("/customers/{email}", customer_page),
        Route("/graph", graph_page),
        Route("/health", health),
        Route("/metrics", metrics),
        Route("/api/customers", api_customers, methods=["GET", "POST"]),
        Route("/api/customers/{email}", api_customer),
        Route("/api/customers/{email}/risk", api_customer_risk),
        Route("/api/tests", api_tests, methods=["POST"]),
        Route("/api/simulation", api_simulation, methods=["GET", "POST"]),
        Route("/api/risk-stream", risk_stream),
        Route("/api/pipeline-status", api_pipeline_status),
        Route("/static/vendor/chart.umd.min.js", chart_js),
        Mount("/static", StaticFiles(directory=HERE / "static"), name="static"),
    ]
    middleware = [
        Middleware(SecurityHeaders),  # outermost: on every answer, the 413s included
        Middleware(BodyLimit),  # no byte over the limit reaches a parser
        Middleware(
            SessionMiddleware,
            secret_key=secret,
            max_age=settings.session_seconds,
            same_site="strict",
            session_cookie="stedi_session",
            https_only=settings.secure_cookies,
        ),
    ]
    return Starlette(
        routes=routes,
        middleware=middleware,
        lifespan=lifespan,
        exception_handlers=EXCEPTION_HANDLERS,
    )
