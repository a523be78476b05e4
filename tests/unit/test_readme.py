"""The README against the code: its settings table is every setting the code reads, with
the code's defaults; its jobs are what `make run` starts; its links lead somewhere."""

from __future__ import annotations

import inspect
import re

from stedi.stack import engine
from stedi.stack.services import ROOT
from tests.scripts import load_script

README = (ROOT / "README.md").read_text()
SCRIPTS = [job.script for job in engine.JOBS]
# A setting read through the project's helpers, with its default expression.
# (A lookahead, so that a read nested in another's default is found too.)
READ = re.compile(r"(?=(?:_env|env_int|env_float|_int)\(\s*\"([A-Z][A-Z0-9_]*)\",\s*([^)\n]*))")
ENVIRON = re.compile(r"os\.environ\.get\(\s*\"([A-Z][A-Z0-9_]*)\"")
SHELL_DEFAULT = re.compile(r"\$\{([A-Z][A-Z0-9_]*):-")


def section(text: str, title: str) -> str:
    start = text.index(f"\n## {title}\n")
    end = text.find("\n## ", start + 1)
    return text[start : end if end >= 0 else None]


def table_rows(text: str) -> list[list[str]]:
    """The body rows of the first Markdown table in `text`, as stripped cells."""
    rows = [line for line in text.splitlines() if line.startswith("|")]
    return [[cell.strip() for cell in row.strip("|").split("|")] for row in rows[2:]]


def documented_settings() -> dict[str, str]:
    """Each variable of the README's settings table, with its default cell."""
    rows = table_rows(section(README, "Settings"))
    return {row[0].strip("`"): row[1] for row in rows}


def read_in(source: str) -> dict[str, str]:
    return {name: default.strip() for name, default in READ.findall(source)}


def settings_the_code_reads() -> dict[str, str]:
    """Name -> default expression, from stedi/config.py, each script's Settings and any
    other os.environ read of stedi/; bin/submit's ${NAME:-default}s."""
    found = read_in((ROOT / "stedi" / "config.py").read_text())
    for script in SCRIPTS:
        found |= read_in(inspect.getsource(load_script(script).Settings))
    for path in (ROOT / "stedi").rglob("*.py"):
        for name in ENVIRON.findall(path.read_text()):
            found.setdefault(name, "")
    submit = (ROOT / "bin" / "submit").read_text()
    found |= dict.fromkeys(SHELL_DEFAULT.findall(submit), "")
    return found


def test_the_settings_table_has_every_setting_the_code_reads_and_no_other():
    documented, read = documented_settings(), settings_the_code_reads()
    assert sorted(set(read) - set(documented)) == [], "read by the code, not in the README"
    assert sorted(set(documented) - set(read)) == [], "in the README, read by no code"


def literal(expression: str) -> str | None:
    """A default written as a plain string or number, as the README shows it; else None."""
    match = re.fullmatch(r"\"([^\"]*)\"|([0-9][0-9_.]*)", expression.rstrip(", "))
    if match is None:
        return None
    text = match.group(1) if match.group(1) is not None else match.group(2)
    text = text.replace("_", "")
    return text.removesuffix(".0")


def test_each_plain_default_in_the_table_is_the_codes():
    documented, checked = documented_settings(), 0
    for name, expression in settings_the_code_reads().items():
        default = literal(expression)
        if default is None:
            continue
        shown = documented[name]
        if default == "":
            assert shown in ("unset", "random per start"), name
        else:
            assert shown == f"`{default}`", name
        checked += 1
    assert checked >= 25  # most defaults are plain; the others are expressions


def test_the_jobs_table_is_what_make_run_starts():
    rows = table_rows(section(README, "The four jobs"))
    assert [(row[0].strip("`"), row[1].strip("`"), row[2].strip("`")) for row in rows] == [
        (job.name, job.script, f"./{job.wrapper}") for job in engine.JOBS
    ]
    for row in rows:  # each wrapper runs its job's script alone
        wrapper = ROOT / row[2].strip("`").removeprefix("./")
        assert f'bin/submit" {row[1].strip("`")}' in wrapper.read_text(), wrapper.name


def test_the_bench_settings_are_in_the_performance_page():
    performance = (ROOT / "docs" / "performance.md").read_text()
    names = read_in((ROOT / "bench" / "settings.py").read_text())
    names |= dict.fromkeys(ENVIRON.findall((ROOT / "bench" / "settings.py").read_text()), "")
    assert names and all(f"`{name}`" in performance for name in names)


def test_a_newcomer_finds_the_course_early_and_the_readme_stays_short():
    lines = README.splitlines()
    assert len(lines) <= 300
    assert any(line == "## Coming from the course" for line in lines[:100])
    assert max(len(line) for line in lines) <= 300


def test_every_relative_link_of_the_readme_and_docs_leads_to_a_file_and_heading():
    pages = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
    checked = 0
    for page in pages:
        for link in re.findall(r"\]\(([^)\s]+)\)", page.read_text()):
            if link.startswith("http"):
                continue
            target, _, anchor = link.partition("#")
            path = (page.parent / target) if target else page
            assert path.exists(), f"{page.name}: {link}"
            if anchor:
                assert anchor in headings(path.read_text()), f"{page.name}: {link}"
            checked += 1
    assert checked >= 10


def headings(text: str) -> set[str]:
    """GitHub's anchors: lower case, punctuation dropped, spaces as hyphens."""
    titles = re.findall(r"^#+ (.+)$", text, re.M)
    return {re.sub(r"[^\w\- ]", "", t.lower()).replace(" ", "-") for t in titles}
