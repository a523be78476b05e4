"""A PATH without some commands, to show what works on a machine that lacks them."""

from __future__ import annotations

import os
from pathlib import Path


def path_without(folder: Path, *names: str) -> str:
    """A PATH of one folder that links every command of today's PATH but `names`."""
    folder.mkdir(parents=True, exist_ok=True)
    for directory in os.environ["PATH"].split(os.pathsep):
        try:
            entries = list(Path(directory).iterdir())
        except OSError:
            continue
        for entry in entries:
            link = folder / entry.name
            if entry.name in names or link.exists() or not os.access(entry, os.X_OK):
                continue
            link.symlink_to(entry)
    return str(folder)
