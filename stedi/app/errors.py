"""The app's errors as answers: a clear message and a 4xx or 503, never a stack trace."""

from __future__ import annotations

import logging

from redis.exceptions import RedisError
from starlette.exceptions import HTTPException
from starlette.requests import Request

from stedi.app.hashing import Busy
from stedi.app.http import error_response
from stedi.app.simulator import TooManySimulations
from stedi.app.store import CustomerQuota
from stedi.app.validation import InvalidInput

log = logging.getLogger("stedi.app")


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


EXCEPTION_HANDLERS = {
    InvalidInput: invalid_input,
    HTTPException: http_error,
    TooManySimulations: too_many_simulations,
    CustomerQuota: customer_quota,
    Busy: hashing_busy,
    RedisError: redis_down,
}
