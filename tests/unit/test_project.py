"""Project-level contracts that a user or spark-submit would trip over. (The wrappers'
runs and the connector jars in use: tests/integration/test_submit_wrappers.py.)"""

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def pinned_pyspark() -> str:
    return re.search(r'"pyspark==([^"]+)"', (ROOT / "pyproject.toml").read_text()).group(1)


def test_the_kafka_connector_version_equals_the_pinned_pyspark():
    pom = (ROOT / "jvm" / "pom.xml").read_text()
    assert re.search(r"<spark.version>([^<]+)</spark.version>", pom).group(1) == pinned_pyspark()
    import pyspark

    assert pyspark.__version__ == pinned_pyspark()
