"""argon2 off the event loop, in a pool with a bounded queue.

argon2 costs tens of milliseconds of CPU, on purpose. Two threads run it; a
burst beyond them waits in a short queue, and beyond that is refused at once
(`Busy`, answered 503 with Retry-After), so a flood never delays every login
by minutes.
"""

from __future__ import annotations

import asyncio
from concurrent.futures import ThreadPoolExecutor

HASH_WORKERS = 2
HASH_QUEUE = 8  # waiting beyond the running ones: under a second of work


class Busy(Exception):
    """The pool's queue is full: try again in a moment."""


class BoundedPool:
    def __init__(self, workers: int = HASH_WORKERS, queue: int = HASH_QUEUE):
        self.executor = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="argon2")
        self.limit = workers + queue
        self.pending = 0  # read and counted on the event loop, without an await between

    async def run(self, function, *args):
        if self.pending >= self.limit:
            raise Busy("The server is busy checking passwords: try again in a moment.")
        self.pending += 1
        try:
            return await asyncio.get_running_loop().run_in_executor(self.executor, function, *args)
        finally:
            self.pending -= 1
