"""The four jobs on the Spark of the Docker image, not the venv's: pip's pyspark at the
version of docker-compose.yaml's SPARK_IMAGE, with docker/spark/Dockerfile's pins and
the Kafka connector of that line (tests/image_spark.py installs them under build/).

One spark-submit of `make run`'s engine with --available-now runs the four scripts'
queries in one JVM, on small topics in the real wire formats.
"""

from __future__ import annotations

import json
import os
import subprocess

import pytest

from stedi.app.risk import MIN_TESTS, StepTest, risk_event, risk_score
from stedi.stack import engine
from stedi.stack.services import ROOT
from tests import image_spark as image_spark_line
from tests.records import SAM_TEST, customer, customer_record, step_test_record
from tests.stack_support import console_rows, create_topics, observed_totals, produce, read_all

# Installing on a fresh machine takes minutes (see tests/image_spark.py).
pytestmark = [pytest.mark.integration, pytest.mark.slow, pytest.mark.timeout(1800)]

SANTOSH = customer("Santosh Fibonnaci", "Santosh.Fibonnaci@test.com", "1963-01-01")
FIRST_STOP_MS = 1_600_070_046_417  # 2020-09-14T07:54:06.417Z
DURATIONS_MS = (60_000, 58_000, 50_000, 45_500, 47_000)  # five tests: two scores


@pytest.fixture(scope="module")
def image_spark(request) -> image_spark_line.ImageSpark:
    """The image's Spark line, installed or reused; the install's progress is shown."""
    capture = request.config.pluginmanager.getplugin("capturemanager")
    with capture.global_and_fixture_disabled():
        return image_spark_line.install()


def app_scores(who: dict) -> list[tuple[str, dict]]:
    """The `stedi-events` records the app publishes for DURATIONS_MS (stedi/app/risk.py)."""
    tests = [StepTest(FIRST_STOP_MS + i * 60_000, d) for i, d in enumerate(DURATIONS_MS)]
    events = []
    for count in range(MIN_TESTS, len(tests) + 1):
        _, value = risk_event(who["email"], risk_score(tests[:count]))
        events.append((value.decode(), json.loads(value)))
    return events


def test_the_four_jobs_run_on_the_docker_images_spark(stack, topics, unique, image_spark, tmp_path):
    env = {
        **topics,
        "STEDI_SPARK_RISK_TOPIC": f"stedi-risk-spark-{unique}",
        "STEDI_RISK_QUALITY_TOPIC": f"risk-quality-{unique}",
    }
    create_topics(stack, env["STEDI_SPARK_RISK_TOPIC"], env["STEDI_RISK_QUALITY_TOPIC"])
    step_tests = [
        step_test_record(SANTOSH, FIRST_STOP_MS + i * 60_000, duration)
        for i, duration in enumerate(DURATIONS_MS)
    ]
    produce(
        stack,
        env["STEDI_REDIS_TOPIC"],
        [customer_record(SANTOSH), customer_record(SAM_TEST), *step_tests],
    )
    events = app_scores(SANTOSH)
    produce(stack, env["STEDI_EVENTS_TOPIC"], [text for text, _ in events], key=b"1600070046417")

    logs = tmp_path / "logs"
    result = subprocess.run(
        [str(ROOT / "bin" / "submit"), "stedi/stack/engine.py", "--available-now"],
        capture_output=True,
        text=True,
        timeout=600,
        env={
            **{k: v for k, v in os.environ.items() if k not in ("SPARK_HOME", "PYTHONPATH")},
            **env,
            "STEDI_SUBMIT": "local",
            "SPARK_SUBMIT": str(image_spark.spark_submit),
            "STEDI_SPARK_JARS": str(image_spark.jars),
            "PYSPARK_PYTHON": str(image_spark.python),
            "STEDI_LOG_DIR": str(logs),
        },
    )
    job_logs = {job.name: (logs / f"{job.name}.log") for job in engine.JOBS}
    shown = (
        result.stdout[-2000:]
        + result.stderr[-3000:]
        + "".join(
            f"\n--- {name}.log\n" + path.read_text()[-2000:]
            for name, path in job_logs.items()
            if path.exists()
        )
    )
    assert result.returncode == 0, shown
    assert f"[engine] Spark {image_spark.version} up" in result.stdout, shown
    log = {name: path.read_text() for name, path in job_logs.items()}

    # customers and risk: the console sinks print their rows
    assert console_rows(log["customers"]) == [
        ["Santosh.Fibonnaci@test.com", "Santosh Fibonnaci", "1963"],
        ["sam.test@test.com", "Sam Test", "2001"],
    ], log["customers"]
    assert console_rows(log["risk"]) == sorted(
        [e["customer"], str(e["score"]), e["riskDate"].replace("T", " ").rstrip("Z")]
        for _, e in events
    ), log["risk"]

    # join: each app score with the customer's birth year
    joined = [json.loads(r.value) for r in read_all(stack, env["KAFKA_RISK_TOPIC"], len(events))]
    expected = [
        {"customer": e["customer"], "score": e["score"], "email": e["customer"], "birthYear": 1963}
        for _, e in events
    ]
    assert sorted(joined, key=lambda v: v["score"]) == sorted(expected, key=lambda v: v["score"])

    # score: Spark's own scores are the app's, byte for byte, and each check says they agree
    spark_scores = read_all(stack, env["STEDI_SPARK_RISK_TOPIC"], len(events))
    assert sorted(r.value.decode() for r in spark_scores) == sorted(text for text, _ in events)
    quality = read_all(stack, env["STEDI_RISK_QUALITY_TOPIC"], len(events))
    checks = [json.loads(r.value) for r in quality]
    assert sorted((c["riskDate"], c["sparkScore"], c["appScore"], c["agree"]) for c in checks) == [
        (e["riskDate"], e["score"], e["score"], True) for _, e in events
    ]
    # the driver's listener: every check counted, every one agreeing
    totals = observed_totals(result.stdout, "risk-score")
    assert totals["checks"] == totals["agreeing"] == len(events), result.stdout[-3000:]
