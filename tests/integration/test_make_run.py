"""`make run` (python -m stedi.stack run): everything starts, Ctrl-C leaves nothing behind."""

import os
import re
import signal
import subprocess
import sys
import time

import httpx
import pytest

from stedi.stack import services
from stedi.stack.pipeline import group_alive

pytestmark = pytest.mark.integration
APP_PORT = 14572


def test_run_starts_the_app_and_the_jobs_and_ctrl_c_stops_them_all(stack, unique, tmp_path):
    env = {
        **os.environ,
        "STEDI_APP_PORT": str(APP_PORT),
        "KAFKA_RISK_TOPIC": f"customer-risk-run-{unique}",
        "STEDI_DEAD_LETTER_TOPIC": f"dead-letter-run-{unique}",
        "STEDI_CHECKPOINT_DIR": str(tmp_path / "checkpoints"),
    }
    run = subprocess.Popen(
        [sys.executable, "-m", "stedi.stack", "run"],
        cwd=services.ROOT,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
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
        assert set(pids) == {"app", "customers", "risk", "join"}
        assert httpx.get(f"http://127.0.0.1:{APP_PORT}/health").status_code == 200
    finally:
        run.send_signal(signal.SIGINT)
        rest, _ = run.communicate(timeout=120)
    assert run.returncode == 0, rest
    assert "stopped join" in rest and "stopped app" in rest
    assert not [name for name, pid in pids.items() if group_alive(pid)], "processes left behind"
    with pytest.raises(httpx.ConnectError):
        httpx.get(f"http://127.0.0.1:{APP_PORT}/health")
    assert services.is_up(), "the stack it did not start keeps running"
