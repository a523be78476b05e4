"""The submit wrappers as a user runs them: spark-submit, the connector jars in use
(moved from tests/unit/test_project.py: they need both, so they are no unit tests)."""

import os
import subprocess

import pytest

from stedi.stack.services import ROOT
from tests.unit.test_project import pinned_pyspark

pytestmark = pytest.mark.integration

WRAPPERS = {
    "submit-redis.sh": "sparkpyrediskafkastreamtoconsole.py",
    "submit-event.sh": "sparkpyeventskafkastreamtoconsole.py",
    "submit-join.sh": "sparkpykafkajoin.py",
    "submit-score.sh": "sparkpyriskscore.py",
}


def test_the_connector_jars_in_use_match_the_pinned_spark():
    jars = sorted(p.name for p in (ROOT / "build" / "jars" / "spark").glob("*.jar"))
    assert f"spark-sql-kafka-0-10_2.13-{pinned_pyspark()}.jar" in jars
    assert not [j for j in jars if j.startswith(("scala-library", "hadoop-client"))], jars


@pytest.mark.slow  # four spark-submit starts, side by side
def test_each_wrapper_runs_its_script_with_the_usage_docstring(tmp_path):
    """... and its JVM takes Spark's classes from the class archive `make install` made."""
    class_log = tmp_path / "classes.log"
    runs = {
        wrapper: subprocess.Popen(
            [str(ROOT / wrapper), "--help"],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env={
                **os.environ,
                "STEDI_SUBMIT": "local",
                # The JVM's own record of where each class came from (one wrapper is enough)
                "SPARK_SUBMIT_OPTS": f"-Xlog:class+load=info:file={class_log}"
                if wrapper == "submit-join.sh"
                else "",
            },
        )
        for wrapper in WRAPPERS
    }
    for wrapper, script in WRAPPERS.items():
        stdout, stderr = runs[wrapper].communicate(timeout=180)
        assert runs[wrapper].returncode == 0, stderr
        assert f"./{wrapper}` runs it here" in stdout, (wrapper, script)
        assert "--available-now" in stdout and "spark-submit --packages" in stdout
    loaded = class_log.read_text()
    assert "org.apache.spark.deploy.SparkSubmit source: shared objects file (top)" in loaded
