"""Login and sign-up attempts, counted in Redis: every app process enforces the same limits.

Each counter is a hash `Attempts:<kind>:<sha256 of the account, address or device>` whose
field `n` counts the attempts of a fixed window: it expires STEDI_LOGIN_WINDOW_SECONDS after
its first attempt. A hash, not a string, so the Redis source (ZADD and SET only) never
publishes it; the digest keeps emails and addresses out of key names.

Attempts are reserved before the awaited password check and refunded on success, in one
Lua script each: the check of every counter and their increments are one step, so no burst
runs more checks than the limit, however many requests reach however many processes.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass

import redis.asyncio as aioredis

from stedi.app.limits import (
    LOGIN_FAILURES_PER_ACCOUNT,
    LOGIN_FAILURES_PER_CLIENT,
    LOGIN_FAILURES_PER_DEVICE,
    LOGIN_WINDOW_SECONDS,
)

# KEYS: the counters. ARGV: window seconds, then each counter's limit.
# 0, nothing counted: a counter is at its limit. 1: one attempt counted on each.
RESERVE = """
for i, key in ipairs(KEYS) do
  if tonumber(redis.call('HGET', key, 'n') or '0') >= tonumber(ARGV[i + 1]) then return 0 end
end
for _, key in ipairs(KEYS) do
  if redis.call('HINCRBY', key, 'n', 1) == 1 then redis.call('EXPIRE', key, ARGV[1]) end
end
return 1
"""
# KEYS: the counters: one attempt given back on each (a counter at zero goes).
REFUND = """
for _, key in ipairs(KEYS) do
  if redis.call('EXISTS', key) == 1 and redis.call('HINCRBY', key, 'n', -1) <= 0 then
    redis.call('DEL', key)
  end
end
return 1
"""


@dataclass(frozen=True)
class Limit:
    kind: str  # "account", "client", "device", "signup"
    attempts: int  # per window

    def key(self, who: str) -> str:
        return f"Attempts:{self.kind}:{hashlib.sha256(who.encode()).hexdigest()}"


ACCOUNT = Limit("account", LOGIN_FAILURES_PER_ACCOUNT)
CLIENT = Limit("client", LOGIN_FAILURES_PER_CLIENT)
DEVICE = Limit("device", LOGIN_FAILURES_PER_DEVICE)


class Attempts:
    """Counters of one window length in Redis."""

    def __init__(self, client: aioredis.Redis, window: int = LOGIN_WINDOW_SECONDS):
        self.window = window
        self._reserve = client.register_script(RESERVE)
        self._refund = client.register_script(REFUND)

    async def reserve(self, counted: list[tuple[Limit, str]]) -> list[str] | None:
        """One attempt on each (limit, who) counter, all or none; the keys it counted on
        (for `refund`), or None when one of them is at its limit."""
        keys = [limit.key(who) for limit, who in counted]
        args = [self.window, *(limit.attempts for limit, _ in counted)]
        return keys if await self._reserve(keys=keys, args=args) else None

    async def refund(self, keys: list[str]) -> None:
        """Gives back the attempts `reserve` counted (it succeeded, or never ran)."""
        await self._refund(keys=keys)


class LoginLimits:
    """OWASP's device cookies: a browser that logged in to an account before carries a
    signed cookie naming it, and its failures count against that cookie alone. Every
    other attempt counts against the account and the client address, which someone else
    can exhaust; the returning user's browser still gets its own attempts."""

    def __init__(self, attempts: Attempts):
        self.attempts = attempts
        # This process's totals since start, for /metrics: wrong passwords (401) and
        # attempts refused (429).
        self.wrong_passwords = 0
        self.refused = 0

    async def reserve(self, account: str, client: str, device: str | None) -> list[str] | None:
        """The counters one attempt took, to refund on success; None: refused (429)."""
        if device is not None:
            counted = [(DEVICE, device)]
        else:
            counted = [(ACCOUNT, account), (CLIENT, client)]
        keys = await self.attempts.reserve(counted)
        if keys is None:
            self.refused += 1
        return keys

    async def refund(self, keys: list[str]) -> None:
        await self.attempts.refund(keys)


class SignupLimit:
    """Sign-ups per client address and window (STEDI_SIGNUPS_PER_CLIENT)."""

    def __init__(self, attempts: Attempts, per_client: int):
        self.attempts, self.limit = attempts, Limit("signup", per_client)
        self.refused = 0  # this process's refusals since start (429), for /metrics

    async def reserve(self, client: str) -> bool:
        if await self.attempts.reserve([(self.limit, client)]) is None:
            self.refused += 1
            return False
        return True
