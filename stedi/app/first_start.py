"""The app's start on a Redis: the keys the course defines, an admin, then the index pass.

Run in the background by the app's lifespan, so the app serves (and says Redis is
down) while Redis is away. It takes a few commands, whatever Redis holds: what older data
the indexes lack is indexed afterwards, in the background (stedi/app/reindex.py), while
/health says up.
"""

from __future__ import annotations

import asyncio
import logging

from redis.exceptions import RedisError

from stedi.app.reindex import IndexPass
from stedi.app.simulator import Simulations
from stedi.app.store import Store
from stedi.config import Settings

log = logging.getLogger("stedi.app")
RETRY_SECONDS = 2


async def prepare_redis(
    store: Store, settings: Settings, simulations: Simulations, index_pass: IndexPass
) -> None:
    """Create `Customer` and `User` if missing; wait for Redis rather than fail the start.

    STEDI_SIMULATE=1 then starts a simulation owned by the admin user. The index pass starts
    when this returns (the app is up by then) and runs on by itself."""
    while True:
        try:
            generated = await store.ensure_keys(settings.admin_user, settings.admin_password)
            if settings.simulate:
                await simulations.start_operator(settings.admin_user or "admin@stedi.test")
            break
        except (RedisError, OSError) as exc:
            log.warning("Redis unavailable (%s): retrying in %d s", exc, RETRY_SECONDS)
            await asyncio.sleep(RETRY_SECONDS)
    if generated:
        log.warning(
            "no user existed: created admin@stedi.test with password %s "
            "(set STEDI_ADMIN_USER/STEDI_ADMIN_PASSWORD to choose your own)",
            generated,
        )
    index_pass.task = asyncio.create_task(index_pass.run_until_done(), name="index-pass")
