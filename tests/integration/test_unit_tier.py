"""`make unit` on a machine without the test tools: no Go, no Chromium, no build/ (so
no Maven jars, no Compose validator), no node_modules; the unit tier passes there,
fetches no jars, and reaches for no service (its Kafka and Redis ports are closed)."""

import os
import shutil
import subprocess

import pytest

from stedi.stack.services import ROOT
from tests.shell_support import path_without

pytestmark = [pytest.mark.integration, pytest.mark.slow]

# Not copied: what the installs and the runs make (the checkout of a new user has none).
LEFT_OUT = {".venv", "build", "node_modules", ".git"}
VENV_STAMPS = (".venv/.stamp-run", ".venv/.stamp-test")


def bare_checkout(folder):
    """The working tree's files (tracked and new, not ignored) in `folder`."""
    listed = subprocess.run(
        ["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"],
        cwd=ROOT, capture_output=True, text=True, check=True,
    ).stdout.split("\0")  # fmt: skip
    for name in filter(None, listed):
        source = ROOT / name
        if name.split("/")[0] in LEFT_OUT or not source.is_file():
            continue
        (folder / name).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(source, folder / name)  # mtimes kept: make sees nothing new
    # The shared Python environment, which `make unit` installs on a new machine: pip's
    # part is left out (-o), since reinstalling would point it at this copy.
    (folder / ".venv").symlink_to(ROOT / ".venv")


@pytest.mark.timeout(900)
def test_make_unit_passes_without_go_chromium_maven_jars_or_services(tmp_path):
    checkout = tmp_path / "checkout"
    checkout.mkdir()
    bare_checkout(checkout)
    assert not (checkout / "build").exists() and not (checkout / "node_modules").exists()
    # (Maven stays: `bin/system-deps run` wants it, and would install it as root.)
    path = path_without(tmp_path / "bin", "go", "chromium", "hadolint")
    env = {
        **{k: v for k, v in os.environ.items() if not k.startswith("PYSPARK")},
        "PATH": path,
        "PYTHONPATH": str(checkout),
        # Nothing listens there: a unit test that reached for a service would fail.
        "KAFKA_BOOTSTRAP_SERVERS": "127.0.0.1:1",
        "REDIS_PORT": "1",
        "STEDI_STACK_DIR": str(tmp_path / "no-stack"),
        "PYTEST_ADDOPTS": "-q -p no:cacheprovider",
    }
    assert shutil.which("go", path=path) is None and shutil.which("chromium", path=path) is None
    result = subprocess.run(
        ["make", "--no-print-directory", *(f"-o{stamp}" for stamp in VENV_STAMPS), "unit"],
        cwd=checkout, env=env, capture_output=True, text=True, timeout=880,
    )  # fmt: skip
    tail = result.stdout[-4000:] + result.stderr[-2000:]
    assert result.returncode == 0, tail
    assert " passed" in result.stdout and "skipped" not in result.stdout, tail
    assert not (checkout / "build" / "jars").exists(), "make unit fetched Maven jars"
    assert not (checkout / "build" / "bin").exists(), "make unit built the Compose validator"
