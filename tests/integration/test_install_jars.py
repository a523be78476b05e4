"""Maven's install step, run for real (moved from tests/unit/test_install.py: it needs
Maven and its repository, which `make unit` does without)."""

import subprocess

import pytest

from stedi.stack.services import ROOT

pytestmark = pytest.mark.integration


def test_the_install_output_has_no_terminal_codes(tmp_path):
    """Maven's install step, run for real into a scratch folder."""
    result = subprocess.run(
        ["make", "--no-print-directory", f"JARS={tmp_path}", f"{tmp_path}/kafka/.stamp"],
        cwd=ROOT, capture_output=True, text=True, timeout=600,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert any(tmp_path.glob("kafka/kafka_*.jar")), result.stdout
    assert "\x1b[" not in result.stdout + result.stderr
