"""Project-level contracts that a user or spark-submit would trip over."""

import os
import re
import subprocess
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
WRAPPERS = {
    "submit-redis.sh": "sparkpyrediskafkastreamtoconsole.py",
    "submit-event.sh": "sparkpyeventskafkastreamtoconsole.py",
    "submit-join.sh": "sparkpykafkajoin.py",
    "submit-score.sh": "sparkpyriskscore.py",
}


def pinned_pyspark() -> str:
    return re.search(r'"pyspark==([^"]+)"', (ROOT / "pyproject.toml").read_text()).group(1)


def test_the_kafka_connector_version_equals_the_pinned_pyspark():
    pom = (ROOT / "jvm" / "pom.xml").read_text()
    assert re.search(r"<spark.version>([^<]+)</spark.version>", pom).group(1) == pinned_pyspark()
    import pyspark

    assert pyspark.__version__ == pinned_pyspark()


def test_the_connector_jars_in_use_match_the_pinned_spark():
    jars = sorted(p.name for p in (ROOT / "build" / "jars" / "spark").glob("*.jar"))
    assert f"spark-sql-kafka-0-10_2.13-{pinned_pyspark()}.jar" in jars
    assert not [j for j in jars if j.startswith(("scala-library", "hadoop-client"))], jars


def test_each_wrapper_runs_its_script_with_the_usage_docstring():
    for wrapper, script in WRAPPERS.items():
        result = subprocess.run(
            [str(ROOT / wrapper), "--help"],
            capture_output=True,
            text=True,
            timeout=120,
            env={**os.environ, "STEDI_SUBMIT": "local"},
        )
        assert result.returncode == 0, result.stderr
        assert f"./{wrapper} --available-now" in result.stdout, (wrapper, script)
        assert "--available-now" in result.stdout
