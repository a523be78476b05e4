"""The Spark of the Docker image, installed outside Docker: pip's pyspark and Maven's connector.

docker-compose.yaml builds the Spark containers from docker/spark/Dockerfile, FROM the
apache/spark tag of its SPARK_IMAGE build argument, adding that Dockerfile's Python
pins. This installs the same line into build/image-spark/<version>/:

- venv/: a virtual environment with pip's pyspark==<version> and those pins;
- jars/: Spark's Kafka connector of that line from Maven (jvm/pom.xml's spark profile
  at <version>, or the newest lower patch that resolves, as some registries lag).

Each part records what it holds in a stamp file, so a second run reuses it; bumping
the compose file's tag or the Dockerfile's pins installs anew. Installing prints its
progress (pyspark is a 450 MB download built into a wheel: minutes on a fresh machine).
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

from stedi.stack.services import ROOT

COMPOSE_FILE = ROOT / "docker-compose.yaml"
SPARK_DOCKERFILE = ROOT / "docker" / "spark" / "Dockerfile"
CACHE = ROOT / "build" / "image-spark"
# The Makefile's Maven call for the spark profile (quiet, batch, no colour codes).
MVN = ["mvn", "-q", "-B", "-Dstyle.color=never", "-f", str(ROOT / "jvm" / "pom.xml"), "-P", "spark"]


@dataclass(frozen=True)
class ImageSpark:
    version: str  # the image's Spark (and pip's pyspark)
    connector_version: str  # the Kafka connector's, the same line
    python: Path
    spark_submit: Path
    jars: Path


def image_spark_version(compose_text: str) -> str:
    """`4.1.2` of the compose file's `SPARK_IMAGE: apache/spark:4.1.2-scala2.13-...`."""
    pattern = r"^\s*SPARK_IMAGE:\s*apache/spark:(\d+\.\d+\.\d+)-"
    versions = set(re.findall(pattern, compose_text, re.M))
    if len(versions) != 1:
        raise ValueError(f"expected one apache/spark version in SPARK_IMAGE, found {versions}")
    return versions.pop()


def image_python_pins(dockerfile_text: str) -> list[str]:
    """The `name==version` requirements of the Dockerfile's pip install."""
    installs = re.findall(r"pip3? install ([^\n]+)", dockerfile_text)
    pins = [word for line in installs for word in line.split() if "==" in word]
    if not pins:
        raise ValueError("the Spark Dockerfile pins no Python package")
    return pins


def _run(command: list[str], **kwargs) -> subprocess.CompletedProcess:
    return subprocess.run(command, check=True, **kwargs)


def _say(text: str) -> None:
    print(f">> {text}", flush=True)


def install_python(version: str, pins: list[str], folder: Path) -> Path:
    """A venv in `folder` with pyspark==version and `pins`; its python."""
    requirements = [f"pyspark=={version}", *pins]
    stamp = folder / ".stamp"
    python = folder / "bin" / "python"
    if stamp.exists() and stamp.read_text().split() == requirements:
        _say(f"pyspark {version} and the image's pins: reusing {folder}")
        return python
    _say(f"{' '.join(requirements)} into {folder} (pip; slow on a first run)")
    shutil.rmtree(folder, ignore_errors=True)
    _run([sys.executable, "-m", "venv", str(folder)])
    _run([str(python), "-m", "pip", "install", "--disable-pip-version-check", *requirements])
    stamp.write_text("\n".join(requirements) + "\n")
    return python


def install_connector(version: str, folder: Path) -> str:
    """Spark's Kafka connector of `version`'s line into `folder`; the version installed."""
    stamp = folder / ".stamp"
    line, patch = version.rsplit(".", 1)
    if stamp.exists():  # the folder is the image version's: any patch it found stays good
        connector = stamp.read_text().strip()
        _say(f"Kafka connector {connector}: reusing {folder}")
        return connector
    for candidate in (f"{line}.{p}" for p in range(int(patch), -1, -1)):
        _say(f"Spark's Kafka connector {candidate} (Maven) into {folder}")
        shutil.rmtree(folder, ignore_errors=True)
        result = subprocess.run(
            [
                *MVN,
                f"-Dspark.version={candidate}",
                "dependency:copy-dependencies",
                "-DincludeScope=runtime",
                f"-DoutputDirectory={folder}",
            ],
            capture_output=True,
            text=True,
            # Debian's Maven prints terminal resets around its output; jansi.noreset stops them.
            env={**os.environ, "MAVEN_OPTS": "-Djansi.noreset=true"},
        )
        if result.returncode == 0:
            stamp.write_text(candidate + "\n")
            return candidate
        error = next((x for x in result.stdout.splitlines() if "[ERROR]" in x), result.stdout)
        _say(f"{candidate} does not resolve here ({error[:300]}); trying the patch before")
    raise RuntimeError(f"no Kafka connector of Spark {line}.x resolves from Maven")


def install() -> ImageSpark:
    """The image's Spark line, installed (or reused) under build/image-spark/<version>/."""
    version = image_spark_version(COMPOSE_FILE.read_text())
    pins = image_python_pins(SPARK_DOCKERFILE.read_text())
    folder = CACHE / version
    python = install_python(version, pins, folder / "venv")
    connector = install_connector(version, folder / "jars")
    return ImageSpark(version, connector, python, python.parent / "spark-submit", folder / "jars")
