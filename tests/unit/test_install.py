"""`make run` installs only what running needs; `make test` adds the test tools."""

import subprocess
from pathlib import Path

from tests.shell_support import path_without

ROOT = Path(__file__).resolve().parents[2]
# Chromium comes with `bin/system-deps test`; hadolint and pytest with the test extra.
TEST_TOOLS = ("system-deps test", "composecheck", "go build", "test,dev")


def dry_run(target: str) -> str:
    """Every command `make <target>` would run on a machine with nothing installed."""
    result = subprocess.run(
        ["make", "--dry-run", "--always-make", "--no-print-directory", target],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0, result.stderr
    return result.stdout


def test_make_run_and_make_up_never_install_a_test_tool():
    for target in ("run", "up"):
        commands = dry_run(target)
        assert "bin/system-deps run" in commands and "'.[spark,bench]'" in commands
        assert [tool for tool in TEST_TOOLS if tool in commands] == [], target


def test_make_test_installs_the_test_tools():
    commands = dry_run("test")
    assert [tool for tool in TEST_TOOLS if tool not in commands] == []


def test_make_unit_installs_no_test_tool_browser_or_maven_jars():
    """The quick loop needs Java and the Python environment with pytest, nothing more
    (tests/integration/test_unit_tier.py runs it on such a machine)."""
    commands = dry_run("unit")
    assert "'.[spark,bench,test,dev]'" in commands and "-m pytest -m unit" in commands
    needless = ("system-deps test", "composecheck", "go build", "mvn", "npm")
    assert [tool for tool in needless if tool in commands] == []


def run_system_deps(mode: str, path: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        ["bash", str(ROOT / "bin" / "system-deps"), mode],
        env={"PATH": path, "HOME": str(Path.home())},
        capture_output=True,
        text=True,
        timeout=60,
    )


def test_without_go_and_chromium_running_needs_nothing_and_testing_says_how_to_get_go(tmp_path):
    path = path_without(tmp_path / "bin", "go", "chromium")
    assert run_system_deps("run", path).returncode == 0
    testing = run_system_deps("test", path)
    assert testing.returncode == 1
    assert "Go 1.24 or newer" in testing.stderr and "https://go.dev/dl/" in testing.stderr
