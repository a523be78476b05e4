"""The tiers, and one local Spark session for the whole run.

Each test gets its folder's tier mark (tests/unit: `unit`, tests/integration:
`integration`, tests/browser: `browser`); tests that start a JVM of their own
(spark-submit, `make run`, the bench) or wait on real time carry `slow` themselves.
The service fixtures (the local stack) live in the integration and browser
conftests, so a unit run never reaches for them.
"""

import os
import shlex
import subprocess
import sys
from pathlib import Path

import pytest

TESTS = Path(__file__).resolve().parent
ROOT = TESTS.parent
TIERS = {"unit", "integration", "browser"}
SPARK_JARS = ROOT / "build" / "jars" / "spark"
# A fixture that runs a job's query on Kafka in this process: the session needs the
# connector's jars, which the JVM only takes when it starts.
KAFKA_SPARK_FIXTURE = "kafka_spark"


@pytest.hookimpl(tryfirst=True)  # before `-m` selects by these marks
def pytest_collection_modifyitems(items):
    for item in items:
        tier = Path(item.fspath).relative_to(TESTS).parts[0]
        if tier in TIERS:
            item.add_marker(tier)


def bin_options(script: str) -> str:
    """What `bin/<script> options` prints: JVM or spark-submit options, empty while the
    thing they use is not built."""
    result = subprocess.run(
        [ROOT / "bin" / script, "options"], capture_output=True, text=True, check=True
    )
    return result.stdout.strip()


def spark_submit_args(with_kafka: bool) -> str:
    """The in-process session's JVM options: the drivers' Spark settings, UI off, the class
    archive, the driver jar, and Spark's Kafka connector (build/jars/spark) only when a
    selected test runs a query on Kafka."""
    args = [
        f"--properties-file {ROOT / 'conf' / 'spark-defaults.conf'}",
        "--conf spark.ui.enabled=false",
    ]
    # Spark's classes from the class archive when `make install` has made it (not in `make unit`)
    archive_options = bin_options("class-archive")
    if archive_options:
        args.append(f"--driver-java-options {shlex.quote(archive_options)}")
    # The drivers' jar (progress lines, no forked chmod per file), once `make install` or
    # `make unit` built it; the class archive was made with it on the class path.
    driver_jar_options = bin_options("driver-jar")
    if driver_jar_options:
        args.append(driver_jar_options)
    if with_kafka:
        jars = sorted(SPARK_JARS.glob("*.jar"))
        assert jars, f"no jars in {SPARK_JARS}: `make install` puts Spark's Kafka connector there"
        args.append("--jars " + ",".join(map(str, jars)))
    return " ".join([*args, "pyspark-shell"])


@pytest.fixture(scope="session")
def spark(request):
    """local[2] with the drivers' settings (conf/spark-defaults.conf), UTC, few shuffle
    partitions, UI off. The one SparkContext of the run: a job's query takes a
    `newSession()` of it (see `kafka_spark` in tests/stack_support.py)."""
    # Python workers (the risk score's state function) run this environment's Python.
    os.environ.setdefault("PYSPARK_PYTHON", sys.executable)
    with_kafka = any(KAFKA_SPARK_FIXTURE in item.fixturenames for item in request.session.items)
    os.environ.setdefault("PYSPARK_SUBMIT_ARGS", spark_submit_args(with_kafka))
    from pyspark.sql import SparkSession

    session = (
        SparkSession.builder.master("local[2]")
        .config("spark.sql.session.timeZone", "UTC")
        .config("spark.sql.shuffle.partitions", "2")
        .getOrCreate()
    )
    session.sparkContext.setLogLevel("WARN")
    yield session
    session.stop()
