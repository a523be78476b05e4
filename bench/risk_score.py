"""The risk-score job (sparkpyriskscore.py) over a backlog of rapid step tests.

BENCH_SCORE_TESTS tests of BENCH_CUSTOMERS customers in turn, as the Redis
source publishes the app's ZADDs, and the scores the app published for them on
an events topic, so the job does all its work: scores, and checks against the
app's. Its figures, and a loud failure when its output is not what the
histories imply.
"""

from __future__ import annotations

import json
import sys

from bench import data
from bench.backlog import run_to_end, timings
from bench.settings import ROOT, BenchSettings
from bench.topics import Topics, read_every_record, record_count
from stedi.config import Settings


def run_risk_score(settings: Settings, topics: Topics, bench: BenchSettings) -> dict:
    tests, customers = bench.score_tests, bench.customers
    print(
        f">> risk-score backlog: {tests:,} rapid step tests of {customers:,} customers",
        file=sys.stderr,
        flush=True,
    )
    tests_topic = topics.create("score-tests")
    app_topic = topics.create("score-app")
    zadds, app_scores = data.step_tests_and_app_scores(tests, customers)
    data.produce(settings, tests_topic, zadds, tests, "rapid step tests")
    expected = data.expected_scores(tests, customers)
    data.produce(settings, app_topic, app_scores, expected, "app risk scores")

    outputs = {
        "STEDI_SPARK_RISK_TOPIC": topics.create("score-out"),
        "STEDI_RISK_QUALITY_TOPIC": topics.create("score-quality"),
        "STEDI_DEAD_LETTER_TOPIC": topics.create("score-dead"),
    }
    env = {"STEDI_REDIS_TOPIC": tests_topic, "STEDI_EVENTS_TOPIC": app_topic, **outputs}
    argv = [str(ROOT / "submit-score.sh"), "--available-now"]
    run, figures = run_to_end("risk-score", argv, env, bench)

    checks = [
        json.loads(r.value)
        for r in read_every_record(settings, outputs["STEDI_RISK_QUALITY_TOPIC"])
    ]
    seconds, tests_read = figures["seconds"], record_count(settings, tests_topic)
    result = {
        "tests": tests_read,
        "customers": customers,
        "app_scores": record_count(settings, app_topic),
        "scores": record_count(settings, outputs["STEDI_SPARK_RISK_TOPIC"]),
        "expected_scores": expected,
        "checks": len(checks),
        "agreeing": sum(c.get("agree") is True for c in checks),
        "dead_letters": record_count(settings, outputs["STEDI_DEAD_LETTER_TOPIC"]),
        "throughput_tps": round(tests_read / seconds, 1) if seconds else 0.0,
        "state_rows": figures["state_rows"],
        **timings(run, figures),
    }
    print(
        f"   risk-score: {tests:,} tests in {seconds:.1f} s of micro-batches "
        f"({result['throughput_tps']:,.0f}/s), {result['scores']:,} scores, "
        f"{result['state_rows']} state rows, {run.elapsed:.1f} s wall",
        file=sys.stderr,
        flush=True,
    )
    check(result)
    return result


def check(result: dict) -> None:
    """Every implied score written once and agreeing with the app's; one state row per
    customer. (`input_rows` is not checked: Spark counts every read of a source, and the
    job's plan reads the tests' topic twice.)
    """
    expected = result["expected_scores"]
    wrong = {
        name: (result[name], want)
        for name, want in [
            ("app_scores", expected),
            # one row per customer tested (its last four tests, as JSON): bounded
            ("state_rows", min(result["tests"], result["customers"])),
            ("scores", expected),
            ("checks", expected),
            ("agreeing", expected),
            ("dead_letters", 0),
        ]
        if result[name] != want
    }
    if wrong:
        raise RuntimeError(
            "the risk-score job's output is not what the histories imply: "
            + ", ".join(f"{name}: {got} (expected {want})" for name, (got, want) in wrong.items())
        )
