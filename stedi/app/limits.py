"""Abuse limits of the app: request body size, login and sign-up attempts, security headers.

The body limit is ASGI middleware, so it holds before any handler parses a
byte: a declared Content-Length above the limit is refused at once, and a body
sent without one (chunked) is cut off once it passes the limit.

Attempts are reserved before the awaited password check and refunded on success:
a check, once reserved, is already counted, so no burst runs more checks than
the limit, however many requests arrive at once (the event loop runs the check
and the count without an await between them).
"""

from __future__ import annotations

import time
from collections import OrderedDict

from starlette.datastructures import Headers, MutableHeaders
from starlette.exceptions import HTTPException
from starlette.responses import JSONResponse
from starlette.types import ASGIApp, Message, Receive, Scope, Send

MAX_BODY_BYTES = 16 * 1024  # the largest form or JSON body the app takes (they are all tiny)
TOO_LARGE = f"The request body is too large (at most {MAX_BODY_BYTES} bytes)."

# Failed logins allowed per window (STEDI_LOGIN_WINDOW_SECONDS): from an unknown browser per
# account and per client address, from a browser with a device cookie per cookie.
LOGIN_WINDOW_SECONDS = 300
LOGIN_FAILURES_PER_ACCOUNT = 5
LOGIN_FAILURES_PER_CLIENT = 20
LOGIN_FAILURES_PER_DEVICE = 5
TRACKED_KEYS = 100_000  # memory bound: the oldest counters go first


class BodyLimit:
    def __init__(self, app: ASGIApp, max_bytes: int = MAX_BODY_BYTES):
        self.app, self.max_bytes = app, max_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        declared = Headers(scope=scope).get("content-length")
        if declared is not None and (not declared.isdigit() or int(declared) > self.max_bytes):
            status = 413 if declared.isdigit() else 400
            message = TOO_LARGE if status == 413 else "Invalid Content-Length."
            await JSONResponse({"error": message}, status_code=status)(scope, receive, send)
            return
        received = 0

        async def limited_receive() -> Message:
            nonlocal received
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > self.max_bytes:
                    # Turned into a 413 by the app's HTTPException handler.
                    raise HTTPException(413, TOO_LARGE)
            return message

        await self.app(scope, limited_receive, send)


class LoginLimiter:
    """Counts failed logins in fixed windows, per key (an account or a client address)."""

    def __init__(self, limit: int, window: float = LOGIN_WINDOW_SECONDS, clock=time.monotonic):
        self.limit, self.window, self.clock = limit, window, clock
        self.failures: OrderedDict[str, tuple[float, int]] = OrderedDict()
        self.refused = 0  # attempts refused since start (429), for /metrics

    def _current(self, key: str) -> int:
        started, count = self.failures.get(key, (0.0, 0))
        if self.clock() - started >= self.window:
            self.failures.pop(key, None)
            return 0
        return count

    def blocked(self, key: str) -> bool:
        return self._current(key) >= self.limit

    def failed(self, key: str) -> None:
        count = self._current(key)
        started = self.failures[key][0] if count else self.clock()
        self.failures[key] = (started, count + 1)
        self.failures.move_to_end(key)
        while len(self.failures) > TRACKED_KEYS:
            self.failures.popitem(last=False)

    def succeeded(self, key: str) -> None:
        self.failures.pop(key, None)

    def reserve(self, key: str) -> bool:
        """Counts an attempt now, before it is checked; False (nothing counted) when the
        limit is reached."""
        if self.blocked(key):
            self.refused += 1
            return False
        self.failed(key)
        return True

    def refund(self, key: str) -> None:
        """Gives back an attempt `reserve` counted (it succeeded, or never ran)."""
        count = self._current(key)
        if count > 1:
            self.failures[key] = (self.failures[key][0], count - 1)
        else:
            self.failures.pop(key, None)


class LoginLimits:
    """OWASP's device cookies: a browser that logged in to an account before carries a
    signed cookie naming it, and its failures count against that cookie alone. Every
    other attempt counts against the account and the client address, which someone else
    can exhaust; the returning user's browser still gets its own attempts."""

    def __init__(self, window: float = LOGIN_WINDOW_SECONDS, clock=time.monotonic):
        self.account = LoginLimiter(LOGIN_FAILURES_PER_ACCOUNT, window, clock)
        self.client = LoginLimiter(LOGIN_FAILURES_PER_CLIENT, window, clock)
        self.device = LoginLimiter(LOGIN_FAILURES_PER_DEVICE, window, clock)
        # Since start, for /metrics: wrong passwords (401) and attempts refused (429).
        self.wrong_passwords = 0
        self.refused = 0

    def reserve(
        self, account: str, client: str, device: str | None
    ) -> list[tuple[LoginLimiter, str]] | None:
        """The counters one attempt took, to refund on success; None: refused (429)."""
        if device is not None:
            keys = [(self.device, device)]
        else:
            keys = [(self.account, account), (self.client, client)]
        if any(limiter.blocked(key) for limiter, key in keys):
            self.refused += 1
            return None
        for limiter, key in keys:
            limiter.reserve(key)
        return keys

    @staticmethod
    def refund(keys: list[tuple[LoginLimiter, str]]) -> None:
        for limiter, key in keys:
            limiter.refund(key)


# Every page's answer carries these. The pages load scripts and styles from /static only.
SECURITY_HEADERS = {
    "Content-Security-Policy": (
        "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
        "connect-src 'self'; object-src 'none'; base-uri 'self'; form-action 'self'; "
        "frame-ancestors 'none'"
    ),
    "X-Frame-Options": "DENY",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "same-origin",
}


class SecurityHeaders:
    """ASGI middleware: SECURITY_HEADERS on every HTTP answer, errors included."""

    def __init__(self, app: ASGIApp):
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return

        async def send_with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                headers = MutableHeaders(scope=message)
                for name, value in SECURITY_HEADERS.items():
                    headers.setdefault(name, value)
            await send(message)

        await self.app(scope, receive, send_with_headers)


MAX_STREAMS = 200  # live graphs open at once, all users together
