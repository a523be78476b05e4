"""The Spark jobs' progress lines, parsed, and what the bench takes from them.

Format (the drivers' listener, jvm/driver's ProgressLines, for the jobs and the peer alike),
maybe with more fields after:
    [<query name>] batch <id>: <n> rows in, <r> rows/s, <ms> ms, <s> state rows
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass

PROGRESS_RE = re.compile(
    r"^\[(?P<query>[^\]]+)\] batch (?P<batch>\d+): (?P<rows>\d+) rows in, "
    r"[\d.]+ rows/s, (?P<ms>\d+) ms\b"
)
# Wherever it comes among the fields after the duration.
STATE_RE = re.compile(r", (?P<state>\d+) state rows\b")


@dataclass(frozen=True)
class Batch:
    query: str
    batch: int
    rows: int
    ms: int
    state_rows: int | None


def parse_line(line: str) -> Batch | None:
    line = line.strip()
    match = PROGRESS_RE.match(line)
    if match is None:
        return None
    state = STATE_RE.search(line, match.end())
    return Batch(
        query=match["query"],
        batch=int(match["batch"]),
        rows=int(match["rows"]),
        ms=int(match["ms"]),
        state_rows=None if state is None else int(state["state"]),
    )


def summarize(batches: Iterable[Batch]) -> dict:
    """Processing time and rows of one run, JVM start-up and shutdown excluded.

    Each query's processing time is the sum of its micro-batch durations
    (`durationMs.triggerExecution`). Queries of one job run side by side, so the
    job's processing time is the longest query's, and its input rows the largest
    query's (a query that reads both topics sees every row once).
    State rows: the last line that reports them.
    """
    batches = list(batches)
    per_query: dict[str, dict] = {}
    for b in batches:
        q = per_query.setdefault(b.query, {"batches": 0, "rows": 0, "ms": 0})
        q["batches"] += 1
        q["rows"] += b.rows
        q["ms"] += b.ms
    state = [b.state_rows for b in batches if b.state_rows is not None]
    return {
        "seconds": max((q["ms"] for q in per_query.values()), default=0) / 1000,
        "input_rows": max((q["rows"] for q in per_query.values()), default=0),
        "state_rows": state[-1] if state else None,
        "queries": per_query,
    }
