"""`make run`: everything starts, without any test tool on PATH; Ctrl-C leaves nothing behind."""

import os
import re
import signal
import subprocess
import time

import httpx
import pytest

from stedi.stack import services
from stedi.stack.pipeline import group_alive
from tests.app_server import free_port
from tests.shell_support import path_without

pytestmark = pytest.mark.integration


def test_run_starts_the_app_and_the_jobs_and_ctrl_c_stops_them_all(stack, unique, tmp_path):
    app_port = free_port()
    env = {
        **os.environ,
        # A machine without the test tools: make run must not need them.
        "PATH": path_without(tmp_path / "bin", "go", "chromium"),
        "STEDI_APP_PORT": str(app_port),
        "KAFKA_RISK_TOPIC": f"customer-risk-run-{unique}",
        "STEDI_DEAD_LETTER_TOPIC": f"dead-letter-run-{unique}",
        "STEDI_SPARK_RISK_TOPIC": f"stedi-risk-spark-run-{unique}",
        "STEDI_RISK_QUALITY_TOPIC": f"risk-quality-run-{unique}",
        "STEDI_CHECKPOINT_DIR": str(tmp_path / "checkpoints"),
    }
    run = subprocess.Popen(
        ["make", "--no-print-directory", "run"],
        cwd=services.ROOT,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        start_new_session=True,  # its own process group, as in a terminal
    )
    lines, pids, deadline = [], {}, time.monotonic() + 180
    try:
        while time.monotonic() < deadline:
            line = run.stdout.readline()
            assert line, "make run exited early:\n" + "".join(lines)
            lines.append(line)
            if started := re.match(r">> (\w+): .* \(pid (\d+)\)", line):
                pids[started.group(1)] = int(started.group(2))
            if "[customer-risk-join] started" in line:
                break
        assert set(pids) == {"app", "customers", "risk", "join", "score"}
        assert httpx.get(f"http://127.0.0.1:{app_port}/health").status_code == 200
    finally:
        os.killpg(run.pid, signal.SIGINT)  # Ctrl-C reaches the terminal's whole group
        rest, _ = run.communicate(timeout=120)
    # make itself got the Ctrl-C too and ends by it once `run` is done.
    assert run.returncode in (0, -signal.SIGINT), rest
    assert "stopped join" in rest and "stopped score" in rest and "stopped app" in rest
    assert not [name for name, pid in pids.items() if group_alive(pid)], "processes left behind"
    with pytest.raises(httpx.ConnectError):
        httpx.get(f"http://127.0.0.1:{app_port}/health")
    assert services.leftovers() == [], "processes of this checkout left behind"
    assert services.is_up(), "the stack it did not start keeps running"
