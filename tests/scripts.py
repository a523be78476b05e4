"""The three entry scripts, imported as modules by the tests (they are not in a package)."""

from __future__ import annotations

import importlib.util
import sys
from types import ModuleType

from stedi.stack.services import ROOT


def load_script(file_name: str) -> ModuleType:
    """Imports ROOT/<file_name> once, under its own name, as spark-submit would run it."""
    name = file_name.removesuffix(".py")
    if name not in sys.modules:
        spec = importlib.util.spec_from_file_location(name, ROOT / file_name)
        module = importlib.util.module_from_spec(spec)
        sys.modules[name] = module  # dataclasses look their module up here
        spec.loader.exec_module(module)
    return sys.modules[name]


redis_job = load_script("sparkpyrediskafkastreamtoconsole.py")
events_job = load_script("sparkpyeventskafkastreamtoconsole.py")
join_job = load_script("sparkpykafkajoin.py")
