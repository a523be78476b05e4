"""bin/submit gives a driver that streams at a trickle the settings of conf/trickle.env."""

import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
TRICKLE = dict(
    line.split("=", 1)
    for line in (ROOT / "conf" / "trickle.env").read_text().splitlines()
    if line and not line.startswith("#")
)


def submitted_env(tmp_path: Path, args: list[str], **env: str) -> dict[str, str]:
    """The trickle's variables a stand-in spark-submit sees when bin/submit runs `args`."""
    jars = tmp_path / "jars"
    jars.mkdir()
    (jars / "connector.jar").write_bytes(b"")
    fake = tmp_path / "spark-submit"
    fake.write_text(
        f'#!/usr/bin/env bash\nfor v in {" ".join(TRICKLE)}; do echo "$v=${{!v:-}}"; done\n'
    )
    fake.chmod(0o755)
    keep = {
        k: v for k, v in os.environ.items() if k not in TRICKLE and k != "STEDI_TRIGGER_INTERVAL"
    }
    result = subprocess.run(
        [str(ROOT / "bin" / "submit"), *args],
        capture_output=True,
        text=True,
        timeout=60,
        env={
            **keep,
            "STEDI_SUBMIT": "local",
            "SPARK_SUBMIT": str(fake),
            "STEDI_SPARK_JARS": str(jars),
            "STEDI_STACK_DIR": str(tmp_path / "stack"),
            "PYSPARK_PYTHON": sys.executable,
            **env,
        },
    )
    assert result.returncode == 0, result.stderr
    return dict(line.split("=", 1) for line in result.stdout.splitlines() if "=" in line)


@pytest.mark.parametrize("script", ["sparkpykafkajoin.py", "stedi/stack/engine.py"])
def test_a_stream_with_its_own_trigger_and_the_engine_get_the_trickle_jvm(tmp_path, script):
    assert (
        TRICKLE["SPARK_DRIVER_MEMORY"] == "512m"
        and "-XX:+UseSerialGC" in TRICKLE["SPARK_SUBMIT_OPTS"]
    )
    assert submitted_env(tmp_path, [script]) == TRICKLE


@pytest.mark.parametrize(
    ("args", "env"),
    [
        (["sparkpykafkajoin.py", "--available-now"], {}),
        (["sparkpyrediskafkastreamtoconsole.py"], {"STEDI_TRIGGER_INTERVAL": "0 seconds"}),
    ],
)
def test_a_backlog_or_a_trigger_set_by_hand_keeps_the_defaults(tmp_path, args, env):
    assert submitted_env(tmp_path, args, **env) == dict.fromkeys(TRICKLE, "")


def test_a_setting_in_the_environment_wins_over_the_file(tmp_path):
    seen = submitted_env(tmp_path, ["sparkpyriskscore.py"], SPARK_DRIVER_MEMORY="2g")
    assert seen == {**TRICKLE, "SPARK_DRIVER_MEMORY": "2g"}
