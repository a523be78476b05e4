"""The entry scripts, imported as modules by the tests (they are not in a package)."""

from __future__ import annotations

from stedi.stack.engine import load_script

redis_job = load_script("sparkpyrediskafkastreamtoconsole.py")
events_job = load_script("sparkpyeventskafkastreamtoconsole.py")
join_job = load_script("sparkpykafkajoin.py")
