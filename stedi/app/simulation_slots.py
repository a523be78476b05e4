"""The simulations' cap, in Redis: whose simulation runs, and in which app process.

The hash `Simulations`: owner -> "<until, epoch ms>:<tests run>:<u|o>:<process>" (u: a user's
simulation, o: the operator's, STEDI_SIMULATE's). A process takes a slot before it starts a
simulation (one Lua script: at most `cap` live slots, every process together), renews its
slots every second or so, and lets go when it stops one. A slot not renewed for
SLOT_SECONDS (its process died) is free. Another process ends a user's simulation by
deleting its slot (a logout or a switch-off there); the running process finds it gone at
its next renewal and stops the simulation.
"""

from __future__ import annotations

import secrets
import time
from dataclasses import dataclass

import redis.asyncio as aioredis

SLOTS = "Simulations"
SLOT_SECONDS = 15
TAKEN, ELSEWHERE, FULL = 1, 2, -1

# KEYS: Simulations. ARGV: owner, process, now ms, until ms, cap (0: none), u|o.
# TAKEN (now, or this process had it), ELSEWHERE (another process runs it) or FULL.
TAKE = """
local now = tonumber(ARGV[3])
local entries = redis.call('HGETALL', KEYS[1])
local live, held = 0, nil
for i = 1, #entries, 2 do
  local until_ms = tonumber(string.match(entries[i + 1], '^(%d+):'))
  if not until_ms or until_ms < now then
    redis.call('HDEL', KEYS[1], entries[i])
  else
    live = live + 1
    if entries[i] == ARGV[1] then held = entries[i + 1] end
  end
end
if held then
  if string.match(held, '^%d+:%d+:%a:(.+)$') == ARGV[2] then return 1 end
  return 2
end
if tonumber(ARGV[5]) > 0 and live >= tonumber(ARGV[5]) then return -1 end
redis.call('HSET', KEYS[1], ARGV[1], ARGV[4] .. ':0:' .. ARGV[6] .. ':' .. ARGV[2])
return 1
"""
# KEYS: Simulations. ARGV: process, until ms, then owner and tests-run pairs.
# The owners whose slot is no longer this process's (ended by another process).
RENEW = """
local lost = {}
for i = 3, #ARGV, 2 do
  local held = redis.call('HGET', KEYS[1], ARGV[i])
  local kind, process = nil, nil
  if held then kind, process = string.match(held, '^%d+:%d+:(%a):(.+)$') end
  if process == ARGV[1] then
    local renewed = ARGV[2] .. ':' .. ARGV[i + 1] .. ':' .. kind .. ':' .. ARGV[1]
    redis.call('HSET', KEYS[1], ARGV[i], renewed)
  else
    lost[#lost + 1] = ARGV[i]
  end
end
return lost
"""
# KEYS: Simulations. ARGV: owner, process ('': any process's user simulation). 1: let go.
RELEASE = """
local held = redis.call('HGET', KEYS[1], ARGV[1])
if not held then return 0 end
local kind, process = string.match(held, '^%d+:%d+:(%a):(.+)$')
if process == ARGV[2] or (ARGV[2] == '' and kind ~= 'o') then
  redis.call('HDEL', KEYS[1], ARGV[1])
  return 1
end
return 0
"""


@dataclass(frozen=True)
class SimulationState:
    """What a user's switch shows: whether their simulation runs (in any process)."""

    running: bool
    tests_run: int


def _now_ms() -> int:
    return int(time.time() * 1000)


class SimulationSlots:
    def __init__(self, client: aioredis.Redis, slot_seconds: float = SLOT_SECONDS):
        self.client, self.slot_seconds = client, slot_seconds
        self.process = secrets.token_hex(8)  # this app process, in the slots it holds
        register = client.register_script
        self._take, self._renew, self._release = register(TAKE), register(RENEW), register(RELEASE)

    def _until(self) -> int:
        return _now_ms() + int(self.slot_seconds * 1000)

    async def take(self, owner: str, cap: int, operator: bool = False) -> int:
        """TAKEN, ELSEWHERE or FULL (cap 0: no cap)."""
        args = [owner, self.process, _now_ms(), self._until(), cap, "o" if operator else "u"]
        return int(await self._take(keys=[SLOTS], args=args))

    async def renew(self, tests_run: dict[str, int]) -> set[str]:
        """Renews this process's slots (owner -> tests run); the owners whose slot is gone."""
        if not tests_run:
            return set()
        args: list = [self.process, self._until()]
        for owner, count in tests_run.items():
            args += [owner, count]
        lost = await self._renew(keys=[SLOTS], args=args)
        return {o.decode() if isinstance(o, bytes) else o for o in lost}

    async def release(self, owner: str, anywhere: bool = False) -> bool:
        """Lets go of this process's slot of `owner`; anywhere=True: of the owner's user
        simulation in whichever process runs it (that process stops it)."""
        args = [owner, "" if anywhere else self.process]
        return bool(await self._release(keys=[SLOTS], args=args))

    async def state(self, owner: str) -> SimulationState:
        held = await self.client.hget(SLOTS, owner)
        if held is None:
            return SimulationState(False, 0)
        until, tests_run = held.decode().split(":")[:2]
        return SimulationState(int(until) >= _now_ms(), int(tests_run))
