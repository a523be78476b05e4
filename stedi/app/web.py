"""The STEDI web app: pages, JSON API, live risk stream. Starlette + Jinja2 (autoescaped).

Every page and API but /login, /signup and /health needs a logged-in session.
Sessions live in Redis and expire (STEDI_SESSION_SECONDS) or end at logout; every
POST carries the session's CSRF token (form field `csrf` or header X-CSRF-Token).
A user sees and tests only the customers they created (or their simulation did);
the risk graph is the team-wide view, by birth year and score, without names.
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
from starlette.exceptions import HTTPException
from starlette.middleware import Middleware
from starlette.middleware.sessions import SessionMiddleware
from starlette.requests import Request
from starlette.responses import JSONResponse, RedirectResponse, Response, StreamingResponse
from starlette.routing import Mount, Route
from starlette.staticfiles import StaticFiles
from starlette.templating import Jinja2Templates

from stedi.app import validation
from stedi.app.devices import DEVICE_COOKIE, DEVICE_SECONDS, DeviceCookies
from stedi.app.hashing import Busy
from stedi.app.kafka_io import GRAPH_ROUND, RiskFeed, RiskPublisher
from stedi.app.limits import (
    MAX_STREAMS,
    BodyLimit,
    LoginLimiter,
    LoginLimits,
    SecurityHeaders,
)
from stedi.app.quality import RiskQuality
from stedi.app.risk import Risk, risk_event
from stedi.app.simulator import Simulations, TooManySimulations
from stedi.app.store import CustomerQuota, Store
from stedi.app.validation import InvalidInput
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
# The signed cookie holds a CSRF token and, once logged in, a session id whose hash Redis
# keeps for the session's lifetime: logout deletes it, so a copied cookie stops working.
def csrf_token(request: Request) -> str:
    if "csrf" not in request.session:
        request.session["csrf"] = secrets.token_urlsafe(32)
    return request.session["csrf"]


def csrf_ok(request: Request, submitted: object) -> bool:
    expected = request.session.get("csrf")
    return bool(
        expected
        and isinstance(submitted, str)
        and hmac.compare_digest(expected.encode(), submitted.encode(errors="replace"))
    )


def is_api(request: Request) -> bool:
    return request.url.path.startswith("/api/")


async def current_user(request: Request) -> str | None:
    """The logged-in email, or None: no session, expired, or ended by logout."""
    if not hasattr(request.state, "user"):  # looked up once per request
        user, session_id = None, request.session.get("sid")
        since = request.session.get("since", 0)
        lifetime = request.app.state.settings.session_seconds
        if isinstance(session_id, str) and time.time() - since <= lifetime:
            user = await request.app.state.store.session_user(session_id)
        if user is None and "sid" in request.session:
            request.session.clear()
        request.state.user = user
    return request.state.user


def page(request: Request, name: str, status_code: int = 200, **context) -> Response:
    context.update(user=getattr(request.state, "user", None), csrf=csrf_token(request))
    return templates.TemplateResponse(request, name, context, status_code=status_code)


def require_type(request: Request, content_type: str) -> None:
    found = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if found != content_type:
        raise HTTPException(415, f"Send the body as {content_type}.")


async def read_form(request: Request) -> dict[str, str]:
    """The fields of a url-encoded form (the app's forms have no files), at most 20."""
    require_type(request, "application/x-www-form-urlencoded")
    return dict(await request.form(max_files=0, max_fields=20))


def login_required(handler):
    """Login first, then (for a POST) the CSRF token, then the handler reads the body."""

    async def wrapper(request: Request):
        if await current_user(request) is None:
            if is_api(request):
                return JSONResponse({"error": "login required"}, status_code=401)
            return RedirectResponse("/login", status_code=303)
        if request.method == "POST":
            if is_api(request):
                submitted = request.headers.get("x-csrf-token")
            else:
                submitted = (await read_form(request)).get("csrf")
            if not csrf_ok(request, submitted):
                return JSONResponse({"error": "invalid CSRF token"}, status_code=403)
        return await handler(request)

    return wrapper


def client_address(request: Request) -> str:
    """The socket's peer; uvicorn puts X-Forwarded-For's there only when the peer is
    STEDI_TRUSTED_PROXY (see __main__), so a client cannot make an address up."""
    return request.client.host if request.client else "unknown"


def wait_message(what: str, settings: Settings) -> str:
    seconds = settings.login_window_seconds
    wait = f"{seconds // 60} minutes" if seconds >= 120 else f"{seconds} seconds"
    return f"Too many {what}: wait {wait}, then try again."


async def login_page(request: Request):
    if request.method == "GET":
        return page(request, "login.html")
    form = await read_form(request)
    if not csrf_ok(request, form.get("csrf")):
        return page(request, "login.html", 403, error="Your form expired: please try again.")
    email, password = form.get("email", "").strip(), form.get("password", "")
    if len(email) > validation.MAX_EMAIL or len(password) > validation.MAX_PASSWORD:
        return page(request, "login.html", 400, error="Wrong email or password.")
    state, settings = request.app.state, request.app.state.settings
    limits: LoginLimits = state.login_limits
    account = email.lower()
    device = state.devices.device(request.cookies.get(DEVICE_COOKIE), account)
    # Counted now, before the awaited check: a burst cannot run more checks than the limit.
    reserved = limits.reserve(account, client_address(request), device)
    if reserved is None:
        message = wait_message("failed logins", settings)
        return page(request, "login.html", 429, error=message, email=email)
    try:
        if not await state.store.check_password(email, password):
            return page(request, "login.html", 401, error="Wrong email or password.", email=email)
        session_id = await state.store.new_session(email, settings.session_seconds)
    except BaseException:
        limits.refund(reserved)  # never checked (argon2 busy, Redis away): not a failure
        raise
    limits.refund(reserved)
    request.session.clear()  # a fresh session (and CSRF token) at login
    request.session.update(sid=session_id, since=int(time.time()))
    response = RedirectResponse("/timer", status_code=303)
    if device is None:  # this browser now knows the password: limited on its own from now
        response.set_cookie(
            DEVICE_COOKIE,
            state.devices.issue(account),
            max_age=DEVICE_SECONDS,
            path="/login",
            secure=settings.secure_cookies,
            httponly=True,
            samesite="strict",
        )
    return response


async def signup_page(request: Request):
    if request.method == "GET":
        return page(request, "signup.html")
    form = await read_form(request)
    if not csrf_ok(request, form.get("csrf")):
        return page(request, "signup.html", 403, error="Your form expired: please try again.")
    try:
        fields = validation.signup(form)
    except InvalidInput as exc:
        shown = form.get("email", "")[: validation.MAX_EMAIL]
        return page(request, "signup.html", 400, error=str(exc), email=shown)
    if not request.app.state.signup_limit.reserve(client_address(request)):
        message = wait_message("sign-ups", request.app.state.settings)
        return page(request, "signup.html", 429, error=message, email=fields[1])
    # The same answer, after the same argon2 hash, whether or not the email was free:
    # the page does not tell who has an account.
    await request.app.state.store.add_user(*fields)
    return RedirectResponse("/login?created=1", status_code=303)


@login_required
async def logout(request: Request):
    session_id = request.session["sid"]
    await request.app.state.store.end_session(session_id)
    request.app.state.feed.end_session(session_id)
    request.session.clear()
    # The owner's last session gone: their simulation ends with it.
    await request.app.state.simulations.end_if_unattended(request.state.user)
    return RedirectResponse("/login", status_code=303)


# --- pages: a user sees only their own customers ----------------------------------------
@login_required
async def home(request: Request):
    return RedirectResponse("/timer", status_code=303)


@login_required
async def timer_page(request: Request):
    customers = await request.app.state.store.customers(request.state.user)
    return page(request, "timer.html", customers=customers)


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


@login_required
async def customer_page(request: Request):
    customer = await own_customer(request)
    tests = request.app.state.store.recent_tests(customer["email"])
    return page(request, "customer_tests.html", customer=customer, tests=tests)


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
    require_type(request, "application/json")
    return validation.json_object(await request.body())


@login_required
async def api_customers(request: Request):
    store: Store = request.app.state.store
    if request.method == "GET":
        return JSONResponse(await store.customers(request.state.user))
    customer = validation.customer(await json_body(request))
    return JSONResponse(await store.add_customer(request.state.user, customer), status_code=201)


@login_required
async def api_customer(request: Request):
    customer = await own_customer(request)
    tests = request.app.state.store.recent_tests(customer["email"])
    return JSONResponse({"customer": customer, "tests": tests})


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
            await simulations.of(user).stop()
    simulator = simulations.of(user)
    return JSONResponse({"active": simulator.running, "testsRun": simulator.tests_run})


async def health(request: Request):
    """Up or down for anyone (container healthchecks); what is wrong only after login."""
    state = request.app.state
    try:
        redis_ok = await asyncio.wait_for(state.store.ping(), 2)
        user = await current_user(request)
    except (RedisError, OSError, asyncio.TimeoutError):
        redis_ok, user = False, None
    status_code = 200 if redis_ok else 503
    if user is None:
        return JSONResponse({"status": "up" if redis_ok else "down"}, status_code=status_code)
    problems = [p for p in (state.publisher.error, state.feed.error) if p]
    problems += state.simulations.errors()
    if not redis_ok:
        problems.insert(0, "Redis unavailable: retrying")
    body = {"status": "up" if redis_ok else "down", "redis": redis_ok, "problems": problems}
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


# --- errors: a clear message, never a stack trace -------------------------------------------
def error_response(request: Request, status_code: int, message: str) -> Response:
    if is_api(request) or request.url.path == "/health":
        return JSONResponse({"error": message}, status_code=status_code)
    return page(request, "error.html", status_code, error=message)


async def invalid_input(request: Request, exc: InvalidInput):
    return error_response(request, 400, str(exc))


async def http_error(request: Request, exc: HTTPException):
    return error_response(request, exc.status_code, exc.detail)


async def too_many_simulations(request: Request, exc: TooManySimulations):
    return error_response(request, 429, str(exc))


async def customer_quota(request: Request, exc: CustomerQuota):
    return error_response(request, 403, str(exc))


async def hashing_busy(request: Request, exc: Busy):
    response = error_response(request, 503, str(exc))
    response.headers["Retry-After"] = "1"
    return response


async def redis_down(request: Request, exc: RedisError):
    log.warning("Redis error on %s: %s", request.url.path, exc)
    message = "Redis is unavailable right now; the app retries. Try again in a moment."
    return error_response(request, 503, message)


# --- the app ---------------------------------------------------------------------------------
def create_app(settings: Settings | None = None) -> Starlette:
    settings = settings or Settings()
    secret = settings.secret_key or secrets.token_urlsafe(32)

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette):
        client = aioredis.Redis(
            host=settings.redis_host,
            port=settings.redis_port,
            password=settings.redis_password,
            socket_timeout=5,
        )
        store = Store(client, customers_per_user=settings.customers_per_user)
        publisher = RiskPublisher(settings.kafka_bootstrap_servers, settings.events_topic)
        feed = RiskFeed(
            settings.kafka_bootstrap_servers, settings.risk_topic, settings.stream_buffer
        )
        quality = RiskQuality(settings.kafka_bootstrap_servers, settings.quality_topic)
        app.state.quality = quality

        def publish_risk(email: str, risk: Risk) -> None:
            publisher.publish(*risk_event(email, risk))

        simulations = Simulations(
            store, publish_risk, speed=settings.sim_speed, max_seconds=settings.sim_max_seconds
        )
        app.state.settings, app.state.store, app.state.simulations = settings, store, simulations
        app.state.publisher, app.state.feed = publisher, feed
        app.state.publish_risk = publish_risk
        app.state.login_limits = LoginLimits(settings.login_window_seconds)
        app.state.signup_limit = LoginLimiter(
            settings.signups_per_client, settings.login_window_seconds
        )
        app.state.devices = DeviceCookies(secret)
        # In the background: the app serves (and says Redis is down) while Redis is away.
        prepare_task = asyncio.create_task(
            prepare_redis(store, settings, simulations), name="prepare-redis"
        )
        publisher_task = asyncio.create_task(publisher.run(), name="risk-publisher")
        reaper_task = asyncio.create_task(simulations.reap_forever(), name="simulation-reaper")
        feed.start()
        quality.start()
        log.info(
            "STEDI app on http://127.0.0.1:%d; Kafka at %s",
            settings.app_port,
            settings.kafka_bootstrap_servers,
        )
        yield
        # First, so it cannot start a simulation while the others stop.
        for task in (prepare_task, reaper_task):
            task.cancel()
        await asyncio.wait([prepare_task, reaper_task])
        await simulations.stop_all()
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
        Route("/customers/{email}", customer_page),
        Route("/graph", graph_page),
        Route("/health", health),
        Route("/api/customers", api_customers, methods=["GET", "POST"]),
        Route("/api/customers/{email}", api_customer),
        Route("/api/tests", api_tests, methods=["POST"]),
        Route("/api/simulation", api_simulation, methods=["GET", "POST"]),
        Route("/api/risk-stream", risk_stream),
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
        exception_handlers={
            InvalidInput: invalid_input,
            HTTPException: http_error,
            TooManySimulations: too_many_simulations,
            CustomerQuota: customer_quota,
            Busy: hashing_busy,
            RedisError: redis_down,
        },
    )


async def prepare_redis(store: Store, settings: Settings, simulations: Simulations) -> None:
    """Create `Customer` and `User` if missing; wait for Redis rather than fail the start.

    STEDI_SIMULATE=1 then starts a simulation owned by the admin user."""
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
    if settings.simulate:
        simulations.start_operator(settings.admin_user or "admin@stedi.test")
