"""A customer's tests as the caregiver sees them, pure: pages, ISO times, scores, the trend.

The rows come from the store's per-customer index (stedi/app/store.py, `TestsOf`), newest
first, each with the score the app computed when it stored the test. The current risk
is computed again from all the rows, by stedi/app/risk.py as everywhere else.
"""

from __future__ import annotations

import math

from stedi.app.risk import STEADY_SECONDS, Risk, StepTest, iso_millis, risk_score, trend

PAGE_SIZE = 50  # tests per page, newest first


def _iso(epoch_ms: int | None) -> str | None:
    return None if epoch_ms is None else iso_millis(epoch_ms)


def test_view(row: dict) -> dict:
    """One test for the API and the page: times in ISO 8601 (UTC), duration in ms."""
    return {
        "startTime": _iso(row["startTime"]),
        "stopTime": _iso(row["stopTime"]),
        "testTime": row["testTime"],
        "totalSteps": row["totalSteps"],
        "score": row["score"],
        "riskDate": _iso(row["riskDate"]),
    }


def current_risk(rows: list[dict]) -> Risk | None:
    """The customer's risk now, from all their tests (None before the fourth)."""
    return risk_score(StepTest(r["stopTime"], r["testTime"]) for r in rows)


def page_count(total: int) -> int:
    return max(1, math.ceil(total / PAGE_SIZE))


def customer_history(customer: dict, rows: list[dict], page: int) -> dict:
    """The customer's page `page` (1 = the newest tests), the scores for the chart (oldest
    first, every page's) and the latest score with its label."""
    shown = rows[(page - 1) * PAGE_SIZE : page * PAGE_SIZE]
    risk = current_risk(rows)
    latest = None
    if risk is not None:
        latest = {
            "score": risk.score,
            "riskDate": iso_millis(risk.risk_date_ms),
            "trend": trend(risk.score),
        }
    scores = [
        {"stopTime": iso_millis(r["stopTime"]), "score": r["score"]}
        for r in reversed(rows)
        if r["score"] is not None
    ]
    return {
        "customer": customer,
        "tests": [test_view(r) for r in shown],
        "page": page,
        "pages": page_count(len(rows)),
        "pageSize": PAGE_SIZE,
        "testCount": len(rows),
        "latest": latest,
        "steadySeconds": STEADY_SECONDS,
        "scores": scores,
    }


def last_tests(customers: list[dict], latest: dict[str, dict]) -> list[dict]:
    """The timer page's list: each customer with the date of their last test, their
    current score and its label (None when never tested or before the fourth test)."""
    listed = []
    for customer in customers:
        summary = latest.get(customer["email"]) or {}
        score = summary.get("score")
        listed.append(
            {
                **customer,
                "lastTest": _iso(summary.get("stopTime")),
                "score": score,
                "trend": None if score is None else trend(score),
            }
        )
    return listed
