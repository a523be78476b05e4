"""The risk-score bench's backlog and its loud check, without Spark or Kafka."""

from __future__ import annotations

import base64
import json

import pytest

from bench import data
from bench.risk_score import check


def test_the_apps_scores_of_the_backlog_are_as_many_as_the_histories_imply():
    # 7 tests of 3 customers: 3, 2 and 2 tests, no score; 14 tests: 5, 5, 4 -> 2 + 2 + 1.
    for tests, customers, scores in [(7, 3, 0), (14, 3, 5), (400, 30, 310)]:
        _, app_scores = data.step_tests_and_app_scores(tests, customers)
        assert len(list(app_scores)) == data.expected_scores(tests, customers) == scores


def test_backlog_tests_are_the_apps_zadds_of_each_customer_in_turn():
    zadds, _ = data.step_tests_and_app_scores(4, 2)
    members = []
    for key, value in zadds:
        record = json.loads(value)
        assert key == b"RapidStepTest" and base64.b64decode(record["key"]) == b"RapidStepTest"
        assert record["zSetEntries"] == record["zsetEntries"]
        members.append(json.loads(base64.b64decode(record["zSetEntries"][0]["element"])))
    assert [m["customer"]["email"] for m in members] == [data.email(i) for i in (0, 1, 0, 1)]
    assert all(m["stopTime"] - m["startTime"] == m["testTime"] > 0 for m in members)
    assert [m["stopTime"] for m in members] == sorted({m["stopTime"] for m in members})


def test_the_first_app_score_is_the_models_of_the_customers_first_four_tests():
    _, app_scores = data.step_tests_and_app_scores(8, 2)
    key, value = next(app_scores)
    a, b, c, d = (data.step_test(j).duration_ms for j in (0, 2, 4, 6))
    assert int(key) > 0
    assert json.loads(value) == {
        "customer": data.email(0),
        "score": round((a + b - c - d) / 2000, 2),
        "riskDate": "2026-01-01T00:00:12.000Z",  # test 6 stops 6 x 2 s after the origin
    }


GOOD = {
    "tests": 400,
    "customers": 30,
    "expected_scores": 310,
    "app_scores": 310,
    "scores": 310,
    "checks": 310,
    "agreeing": 310,
    "dead_letters": 0,
    "state_rows": 30,
}


def test_a_backlog_scored_as_its_histories_imply_passes_the_check():
    check(GOOD)


@pytest.mark.parametrize(
    "name, value",
    [
        ("scores", 309),
        ("scores", 311),
        ("agreeing", 309),
        ("checks", 0),
        ("dead_letters", 1),
        ("state_rows", 31),
        ("state_rows", 120),
    ],
)
def test_any_other_count_fails_the_bench_loudly(name, value):
    with pytest.raises(RuntimeError, match=f"{name}: {value} \\(expected"):
        check({**GOOD, name: value})
