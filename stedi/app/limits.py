"""Abuse limits of the app: request body size, login and sign-up attempts, security headers.

The body limit is ASGI middleware, so it holds before any handler parses a
byte: a declared Content-Length above the limit is refused at once, and a body
sent without one (chunked) is cut off once it passes the limit. The login and
sign-up attempts are counted in Redis, for every app process (stedi/app/attempts.py).
"""

from __future__ import annotations

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


MAX_STREAMS = 200  # live graphs open at once in one app process, all users together
