"""`make unit` on a machine without the test tools: no Go, no Chromium, no build/ (so
no Maven jars, no Compose validator), no node_modules; the unit tier passes there,
fetches no jars, and reaches for no service (its Kafka and Redis ports are closed).
The run itself: tests/bare_unit_run.py (started early by tests/integration/conftest.py)."""

import re
import shutil

import pytest

from tests.integration.conftest import UNIT_SUMMARY

pytestmark = [pytest.mark.integration, pytest.mark.slow]


@pytest.mark.timeout(1200)
def test_make_unit_passes_without_go_chromium_maven_jars_or_services(bare_unit_run, request):
    """`make test` runs the unit tier here only (`-m "not unit"` in the Makefile): once,
    on the machine a new user without the test tools has."""
    assert shutil.which("go", path=bare_unit_run.path) is None
    assert shutil.which("chromium", path=bare_unit_run.path) is None
    returncode, output = bare_unit_run.wait(timeout=1100)
    tail = output[-4000:]
    assert returncode == 0, tail
    summary = re.findall(r"^=*\s*(\d+ passed.*?)\s*=*$", output, re.MULTILINE)
    assert summary and "skipped" not in output and "failed" not in summary[-1], tail
    request.config.stash[UNIT_SUMMARY] = summary[-1]  # make test's last lines show it
    checkout = bare_unit_run.checkout
    assert not (checkout / "node_modules").exists()
    assert not (checkout / "build" / "jars").exists(), "make unit fetched Maven jars"
    assert not (checkout / "build" / "bin").exists(), "make unit built the Compose validator"
