"""The README against the code: its jobs are what `make run` starts, it stays short, and
its links (and the docs') lead somewhere."""

from __future__ import annotations

import re

from stedi.stack import engine
from stedi.stack.services import ROOT

README = (ROOT / "README.md").read_text()
SCRIPTS = [job.script for job in engine.JOBS]
# A setting read through the project's helpers, with its default expression (a lookahead,
# so that a read nested in another's default is found too), and a plain environment read.
READ = re.compile(r"(?=(?:_env|env_int|env_float|_int)\(\s*\"([A-Z][A-Z0-9_]*)\",\s*([^)\n]*))")
ENVIRON = re.compile(r"os\.environ\.get\(\s*\"([A-Z][A-Z0-9_]*)\"")


def section(text: str, title: str) -> str:
    start = text.index(f"\n## {title}\n")
    end = text.find("\n## ", start + 1)
    return text[start : end if end >= 0 else None]


def table_rows(text: str) -> list[list[str]]:
    """The body rows of the first Markdown table in `text`, as stripped cells."""
    rows = [line for line in text.splitlines() if line.startswith("|")]
    return [[cell.strip() for cell in row.strip("|").split("|")] for row in rows[2:]]


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
    source = (ROOT / "bench" / "settings.py").read_text()
    names = {name for name, _ in READ.findall(source)} | set(ENVIRON.findall(source))
    assert names and all(f"`{name}`" in performance for name in names)


def test_a_newcomer_finds_the_course_early_and_the_readme_stays_short():
    lines = README.splitlines()
    assert len(lines) <= 200
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
