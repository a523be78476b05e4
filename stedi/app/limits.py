"""Abuse limits of the app: request body size, login attempts.

The body limit is ASGI middleware, so it holds before any handler parses a
byte: a declared Content-Length above the limit is refused at once, and a body
sent without one (chunked) is cut off once it passes the limit.
"""

from __future__ import annotations

import time
from collections import OrderedDict

from starlette.datastructures import Headers
from starlette.exceptions import HTTPException
from starlette.responses import JSONResponse
from starlette.types import ASGIApp, Message, Receive, Scope, Send

MAX_BODY_BYTES = 16 * 1024  # the largest form or JSON body the app takes (they are all tiny)
TOO_LARGE = f"The request body is too large (at most {MAX_BODY_BYTES} bytes)."

# Failed logins allowed per window, per account and per client address.
LOGIN_WINDOW_SECONDS = 300
LOGIN_FAILURES_PER_ACCOUNT = 5
LOGIN_FAILURES_PER_CLIENT = 20
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


MAX_STREAMS = 200  # live graphs open at once, all users together
