"""The STEDI web app: pages, JSON API, live risk stream. Starlette + Jinja2 (autoescaped).

Every page and API but /login, /signup and /health needs a logged-in session.
Sessions are signed cookies that expire (STEDI_SESSION_SECONDS); every POST
carries the session's CSRF token (form field `csrf` or header X-CSRF-Token).
"""

from __future__ import annotations

import asyncio
import contextlib
import hmac
import json
import logging
import os
import secrets
import time
from pathlib import Path

import redis.asyncio as aioredis
from redis.exceptions import RedisError
from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.middleware.sessions import SessionMiddleware
from starlette.requests import Request
from starlette.responses import JSONResponse, RedirectResponse, Response, StreamingResponse
from starlette.routing import Mount, Route
from starlette.staticfiles import StaticFiles
from starlette.templating import Jinja2Templates

from stedi.app.kafka_io import GRAPH_ROUND, RiskFeed, RiskPublisher
from stedi.app.quality import RiskQuality
from stedi.app.risk import TOTAL_STEPS, Risk, risk_event
from stedi.app.simulator import Simulator
from stedi.app.store import InvalidInput, Store, validate_customer
from stedi.config import Settings

log = logging.getLogger("stedi.app")
HERE = Path(__file__).parent
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
templates = Jinja2Templates(directory=HERE / "templates")


# --- sessions, login and CSRF ------------------------------------------------------------
def csrf_token(request: Request) -> str:
    if "csrf" not in request.session:
        request.session["csrf"] = secrets.token_urlsafe(32)
    return request.session["csrf"]


def csrf_ok(request: Request, submitted: str | None) -> bool:
    expected = request.session.get("csrf")
    return bool(expected and submitted and hmac.compare_digest(expected, submitted))


def current_user(request: Request) -> str | None:
    """The logged-in email, or None; a session older than its lifetime is ended here too."""
    user, since = request.session.get("user"), request.session.get("since", 0)
    if user and time.time() - since > request.app.state.settings.session_seconds:
        request.session.clear()
        return None
    return user


def page(request: Request, name: str, status_code: int = 200, **context) -> Response:
    context.update(user=current_user(request), csrf=csrf_token(request))
    return templates.TemplateResponse(request, name, context, status_code=status_code)


def login_required(handler):
    async def wrapper(request: Request):
        if current_user(request) is None:
            if request.url.path.startswith("/api/"):
                return JSONResponse({"error": "login required"}, status_code=401)
            return RedirectResponse("/login", status_code=303)
        if request.method == "POST":
            if request.url.path.startswith("/api/"):
                submitted = request.headers.get("x-csrf-token")
            else:
                submitted = (await request.form()).get("csrf")
            if not csrf_ok(request, submitted):
                return JSONResponse({"error": "invalid CSRF token"}, status_code=403)
        return await handler(request)

    return wrapper


async def login_page(request: Request):
    if request.method == "GET":
        return page(request, "login.html")
    form = await request.form()
    if not csrf_ok(request, form.get("csrf")):
        return page(request, "login.html", 403, error="Your form expired: please try again.")
    email, password = form.get("email", ""), form.get("password", "")
    if not await request.app.state.store.check_password(email, password):
        return page(request, "login.html", 401, error="Wrong email or password.", email=email)
    request.session.clear()  # a fresh session (and CSRF token) at login
    request.session.update(user=email.strip(), since=int(time.time()))
    return RedirectResponse("/timer", status_code=303)


async def signup_page(request: Request):
    if request.method == "GET":
        return page(request, "signup.html")
    form = await request.form()
    if not csrf_ok(request, form.get("csrf")):
        return page(request, "signup.html", 403, error="Your form expired: please try again.")
    try:
        await request.app.state.store.add_user(
            form.get("userName", ""), form.get("email", ""), form.get("password", "")
        )
    except InvalidInput as exc:
        return page(request, "signup.html", 400, error=str(exc), email=form.get("email", ""))
    return RedirectResponse("/login?created=1", status_code=303)


@login_required
async def logout(request: Request):
    request.session.clear()
    return RedirectResponse("/login", status_code=303)


# --- pages -------------------------------------------------------------------------------
@login_required
async def home(request: Request):
    return RedirectResponse("/timer", status_code=303)


@login_required
async def timer_page(request: Request):
    return page(request, "timer.html", customers=await request.app.state.store.customers())


@login_required
async def new_customer_page(request: Request):
    if request.method == "GET":
        return page(request, "customer.html", form={})
    form = dict(await request.form())
    try:
        customer = validate_customer(
            form.get("customerName", ""),
            form.get("email", ""),
            form.get("phone", ""),
            form.get("birthDay", ""),
        )
        await request.app.state.store.add_customer(customer)
    except InvalidInput as exc:
        return page(request, "customer.html", 400, error=str(exc), form=form)
    return page(request, "customer.html", created=customer, form={})


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
async def json_body(request: Request) -> dict:
    try:
        body = await request.json()
    except ValueError:
        raise InvalidInput("The body must be JSON.") from None
    if not isinstance(body, dict):
        raise InvalidInput("The body must be a JSON object.")
    return body


@login_required
async def api_customers(request: Request):
    store: Store = request.app.state.store
    if request.method == "GET":
        return JSONResponse(await store.customers())
    body = await json_body(request)
    customer = validate_customer(
        str(body.get("customerName", "")),
        str(body.get("email", "")),
        str(body.get("phone", "")),
        str(body.get("birthDay", "")),
    )
    return JSONResponse(await store.add_customer(customer), status_code=201)


@login_required
async def api_tests(request: Request):
    store: Store = request.app.state.store
    body = await json_body(request)
    customer = await store.customer(str(body.get("email", "")))
    if customer is None:
        raise InvalidInput("Unknown customer: create the customer first.")
    if body.get("totalSteps") != TOTAL_STEPS:
        raise InvalidInput(f"A rapid step test has exactly {TOTAL_STEPS} steps.")
    try:
        start, stop = int(body["startTime"]), int(body["stopTime"])
    except (KeyError, TypeError, ValueError):
        raise InvalidInput("startTime and stopTime must be epoch milliseconds.") from None
    test, risk = await store.add_test(customer, start, stop)
    score = None if risk is None else risk.score
    log.info("test stored for %s (%d ms), risk score %s", customer["email"], stop - start, score)
    if risk is not None:
        request.app.state.publish_risk(customer["email"], risk)
    return JSONResponse({"test": test, "score": score}, status_code=201)


@login_required
async def api_simulation(request: Request):
    simulator: Simulator = request.app.state.simulator
    if request.method == "POST":
        body = await json_body(request)
        if body.get("active"):
            simulator.start()
        else:
            await simulator.stop()
    return JSONResponse({"active": simulator.running, "testsRun": simulator.tests_run})


async def health(request: Request):
    """No login: for people and for container healthchecks."""
    state = request.app.state
    try:
        redis_ok = await asyncio.wait_for(state.store.ping(), 2)
    except (RedisError, OSError, asyncio.TimeoutError):
        redis_ok = False
    problems = [p for p in (state.publisher.error, state.feed.error, state.simulator.error) if p]
    if not redis_ok:
        problems.insert(0, "Redis unavailable: retrying")
    body = {"ok": redis_ok, "redis": redis_ok, "problems": problems}
    return JSONResponse(body, status_code=200 if redis_ok else 503)


@login_required
async def risk_stream(request: Request):
    """Server-Sent Events: the current round, then every new point; the browser reconnects."""
    feed: RiskFeed = request.app.state.feed
    queue = feed.subscribe()

    async def events():
        try:
            yield f"event: round\ndata: {json.dumps(feed.points)}\n\n"
            while True:
                try:
                    point = await asyncio.wait_for(queue.get(), 15)
                    yield f"event: point\ndata: {json.dumps(point)}\n\n"
                except asyncio.TimeoutError:
                    yield ": keep-alive\n\n"
        finally:
            feed.unsubscribe(queue)

    headers = {"Cache-Control": "no-cache", "X-Accel-Buffering": "no"}
    return StreamingResponse(events(), media_type="text/event-stream", headers=headers)


async def chart_js(request: Request):
    if not CHART_JS.exists():
        return Response("chart.js is not installed: run `make install`", status_code=500)
    return Response(CHART_JS.read_bytes(), media_type="text/javascript")


# --- errors ----------------------------------------------------------------------------------
async def invalid_input(request: Request, exc: InvalidInput):
    return JSONResponse({"error": str(exc)}, status_code=400)


async def redis_down(request: Request, exc: RedisError):
    log.warning("Redis error on %s: %s", request.url.path, exc)
    message = "Redis is unavailable right now; the app retries. Try again in a moment."
    if request.url.path.startswith("/api/"):
        return JSONResponse({"error": message}, status_code=503)
    return page(request, "error.html", 503, error=message)


# --- the app ---------------------------------------------------------------------------------
def create_app(settings: Settings | None = None) -> Starlette:
    settings = settings or Settings()

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette):
        client = aioredis.Redis(
            host=settings.redis_host,
            port=settings.redis_port,
            password=settings.redis_password,
            socket_timeout=5,
        )
        store = Store(client)
        publisher = RiskPublisher(settings.kafka_bootstrap_servers, settings.events_topic)
        feed = RiskFeed(settings.kafka_bootstrap_servers, settings.risk_topic)
        quality = RiskQuality(settings.kafka_bootstrap_servers, settings.quality_topic)
        app.state.quality = quality

        def publish_risk(email: str, risk: Risk) -> None:
            publisher.publish(*risk_event(email, risk))

        simulator = Simulator(store, publish_risk, speed=settings.sim_speed)
        app.state.settings, app.state.store, app.state.simulator = settings, store, simulator
        app.state.publisher, app.state.feed = publisher, feed
        app.state.publish_risk = publish_risk
        # In the background: the app serves (and says Redis is down) while Redis is away.
        prepare_task = asyncio.create_task(prepare_redis(store, settings), name="prepare-redis")
        publisher_task = asyncio.create_task(publisher.run(), name="risk-publisher")
        feed.start()
        quality.start()
        if settings.simulate:
            simulator.start()
        log.info(
            "STEDI app on http://127.0.0.1:%d; Kafka at %s",
            settings.app_port,
            settings.kafka_bootstrap_servers,
        )
        yield
        await simulator.stop()
        prepare_task.cancel()
        publisher_task.cancel()
        feed.close()
        quality.close()
        publisher.close()
        await client.aclose()

    routes = [
        Route("/", home),
        Route("/login", login_page, methods=["GET", "POST"]),
        Route("/signup", signup_page, methods=["GET", "POST"]),
        Route("/logout", logout, methods=["POST"]),
        Route("/timer", timer_page),
        Route("/customers/new", new_customer_page, methods=["GET", "POST"]),
        Route("/graph", graph_page),
        Route("/health", health),
        Route("/api/customers", api_customers, methods=["GET", "POST"]),
        Route("/api/tests", api_tests, methods=["POST"]),
        Route("/api/simulation", api_simulation, methods=["GET", "POST"]),
        Route("/api/risk-stream", risk_stream),
        Route("/static/vendor/chart.umd.min.js", chart_js),
        Mount("/static", StaticFiles(directory=HERE / "static"), name="static"),
    ]
    secret = settings.secret_key or secrets.token_urlsafe(32)
    middleware = [
        Middleware(
            SessionMiddleware,
            secret_key=secret,
            max_age=settings.session_seconds,
            same_site="strict",
            session_cookie="stedi_session",
        )
    ]
    return Starlette(
        routes=routes,
        middleware=middleware,
        lifespan=lifespan,
        exception_handlers={InvalidInput: invalid_input, RedisError: redis_down},
    )


async def prepare_redis(store: Store, settings: Settings) -> None:
    """Create `Customer` and `User` if missing; wait for Redis rather than fail the start."""
    while True:
        try:
            generated = await store.ensure_keys(settings.admin_user, settings.admin_password)
            await store.load_history()
            break
        except (RedisError, OSError) as exc:
            log.warning("Redis unavailable (%s): retrying in 2 s", exc)
            await asyncio.sleep(2)
    if generated:
        log.warning(
            "no user existed: created admin@stedi.test with password %s "
            "(set STEDI_ADMIN_USER/STEDI_ADMIN_PASSWORD to choose your own)",
            generated,
        )
