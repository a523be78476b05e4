"""Login, sessions and CSRF: who is asking, and whether a POST comes from our own page.

The signed cookie holds a CSRF token and, once logged in, a session id whose hash Redis
keeps for the session's lifetime: logout deletes it, so a copied cookie stops working.
Failed logins are counted before the argon2 check, in Redis for every app process
(stedi/app/attempts.py), per account, client address and device cookie.
"""

from __future__ import annotations

import asyncio
import contextlib
import hmac
import time

from redis.exceptions import RedisError
from starlette.requests import Request
from starlette.responses import JSONResponse, RedirectResponse, Response

from stedi.app import validation
from stedi.app.attempts import LoginLimits
from stedi.app.devices import DEVICE_COOKIE, DEVICE_SECONDS
from stedi.app.http import client_address, is_api, page, read_form
from stedi.app.validation import InvalidInput
from stedi.config import Settings


def csrf_ok(request: Request, submitted: object) -> bool:
    expected = request.session.get("csrf")
    return bool(
        expected
        and isinstance(submitted, str)
        and hmac.compare_digest(expected.encode(), submitted.encode(errors="replace"))
    )


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


def wait_message(what: str, settings: Settings) -> str:
    seconds = settings.login_window_seconds
    wait = f"{seconds // 60} minutes" if seconds >= 120 else f"{seconds} seconds"
    return f"Too many {what}: wait {wait}, then try again."


async def form_of_our_page(request: Request, template: str) -> tuple[dict, Response | None]:
    """The posted form, or the answer instead: the page for a GET, the page again (403)
    when the form's CSRF token is not the session's."""
    if request.method == "GET":
        return {}, page(request, template)
    form = await read_form(request)
    if csrf_ok(request, form.get("csrf")):
        return form, None
    return form, page(request, template, 403, error="Your form expired: please try again.")


async def login_page(request: Request):
    form, answer = await form_of_our_page(request, "login.html")
    if answer is not None:
        return answer
    email, password = form.get("email", "").strip(), form.get("password", "")
    if len(email) > validation.MAX_EMAIL or len(password) > validation.MAX_PASSWORD:
        return page(request, "login.html", 400, error="Wrong email or password.")
    state, settings = request.app.state, request.app.state.settings
    limits: LoginLimits = state.login_limits
    account = email.lower()
    device = state.devices.device(request.cookies.get(DEVICE_COOKIE), account)
    # Counted now, before the awaited check: a burst cannot run more checks than the limit.
    reserved = await limits.reserve(account, client_address(request), device)
    if reserved is None:
        message = wait_message("failed logins", settings)
        return page(request, "login.html", 429, error=message, email=email)
    try:
        if not await state.store.check_password(email, password):
            limits.wrong_passwords += 1
            return page(request, "login.html", 401, error="Wrong email or password.", email=email)
        session_id = await state.store.new_session(email, settings.session_seconds)
    except BaseException:
        # Never checked (argon2 busy, Redis away): not a failure. Without Redis, the counter
        # ends with its window.
        with contextlib.suppress(RedisError):
            await asyncio.shield(limits.refund(reserved))
        raise
    await limits.refund(reserved)
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
    form, answer = await form_of_our_page(request, "signup.html")
    if answer is not None:
        return answer
    try:
        fields = validation.signup(form)
    except InvalidInput as exc:
        shown = form.get("email", "")[: validation.MAX_EMAIL]
        return page(request, "signup.html", 400, error=str(exc), email=shown)
    if not await request.app.state.signup_limit.reserve(client_address(request)):
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
