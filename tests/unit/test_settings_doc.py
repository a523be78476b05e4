"""docs/operations.md's settings table against the code: every setting the code reads,
with the code's defaults, and no other."""

from __future__ import annotations

import re
from collections import defaultdict

from stedi.stack import engine
from stedi.stack.services import ROOT
from tests.unit.test_readme import ENVIRON, READ, section, table_rows

OPERATIONS = (ROOT / "docs" / "operations.md").read_text()
SCRIPTS = [job.script for job in engine.JOBS]
# A script's plain read: `env("NAME") or "default"` (env is os.environ.get).
SCRIPT_READ = re.compile(
    r"(?:\benv|os\.environ\.get)\(\"([A-Z][A-Z0-9_]*)\"\)(?: or (\"[^\"]*\"))?"
)
SHELL_DEFAULT = re.compile(r"\$\{([A-Z][A-Z0-9_]*):-")


def documented_settings() -> dict[str, str]:
    """Each variable of the settings table, with its default cell."""
    rows = table_rows(section(OPERATIONS, "Settings"))
    return {row[0].strip("`"): row[1] for row in rows}


def settings_the_code_reads() -> dict[str, set[str]]:
    """Name -> its default expressions, from stedi/config.py, the scripts and any other
    os.environ read of stedi/; bin/submit's ${NAME:-default}s."""
    found: dict[str, set[str]] = defaultdict(set)
    for name, default in READ.findall((ROOT / "stedi" / "config.py").read_text()):
        found[name].add(default.strip())
    for script in SCRIPTS:
        for name, default in SCRIPT_READ.findall((ROOT / script).read_text()):
            found[name].add(default)
    for path in (ROOT / "stedi").rglob("*.py"):
        for name in ENVIRON.findall(path.read_text()):
            found[name].add("")
    for name in SHELL_DEFAULT.findall((ROOT / "bin" / "submit").read_text()):
        found[name].add("")
    return found


def test_the_settings_table_has_every_setting_the_code_reads_and_no_other():
    documented, read = documented_settings(), settings_the_code_reads()
    assert sorted(set(read) - set(documented)) == [], "read by the code, not in the table"
    assert sorted(set(documented) - set(read)) == [], "in the table, read by no code"


def literal(expression: str) -> str | None:
    """A default written as a plain string or number, as the table shows it; else None."""
    match = re.fullmatch(r"\"([^\"]*)\"|([0-9][0-9_.]*)", expression.rstrip(", "))
    if match is None:
        return None
    text = match.group(1) if match.group(1) is not None else match.group(2)
    return text.replace("_", "").removesuffix(".0")


def test_each_plain_default_in_the_table_is_the_codes():
    documented, checked = documented_settings(), 0
    for name, expressions in settings_the_code_reads().items():
        defaults = {literal(e) for e in expressions} - {None}
        shown = documented[name]
        if defaults == {""}:
            assert shown in ("unset", "random per start"), name
        for default in defaults - {""}:  # a default per job: each is in the cell
            assert f"`{default}`" in shown, name
            checked += 1
    assert checked >= 25  # most defaults are plain; the others are expressions
