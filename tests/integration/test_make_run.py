"""`make run`: everything starts, without any test tool on PATH; Ctrl-C leaves nothing behind."""

import json
import os
import queue
import re
import signal
import subprocess
import threading
import time

import httpx
import pytest

from stedi.stack import services
from stedi.stack.pipeline import group_alive
from tests.app_server import free_port
from tests.records import customer
from tests.shell_support import path_without

pytestmark = [pytest.mark.integration, pytest.mark.slow]


QUERIES = {
    "customers": "redis-customers-console",
    "risk": "risk-events-console",
    "join": "customer-risk-join",
    "score": "risk-score",
}


def test_run_starts_the_app_and_one_engine_and_ctrl_c_stops_them_all(
    stack, unique, tmp_path, redis_client
):
    """One Spark engine runs the four jobs; each job's lines, the console rows too, come
    with the job's prefix; Ctrl-C leaves no process behind."""
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
        # Only what arrives from now on: the customers console shows the new customer soon.
        "STEDI_STARTING_OFFSETS": "latest",
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
    email = f"Run.Check.{unique}@test.com"
    output: queue.Queue[str] = queue.Queue()  # make run's lines; "" once it has ended

    def read_lines():
        for line in run.stdout:
            output.put(line)
        output.put("")

    reader = threading.Thread(target=read_lines, daemon=True)
    reader.start()
    lines, pids, started, deadline = [], {}, set(), time.monotonic() + 240
    try:
        while time.monotonic() < deadline:
            try:  # a line, or none for a while: the deadline still holds
                line = output.get(timeout=1)
            except queue.Empty:
                continue
            assert line, "make run exited early:\n" + "".join(lines)
            lines.append(line)
            if announced := re.match(r">> (\w+): .* \(pid (\d+)\)", line):
                pids[announced.group(1)] = int(announced.group(2))
            if job := re.match(r"\s*(\w+) \| \[([\w-]+)\] started", line):
                assert QUERIES[job.group(1)] == job.group(2), line  # each under its own prefix
                started.add(job.group(1))
            if re.match(r"\s*customers \| \[redis-customers-console\] batch 0:", line):
                # Its first batch fixed where "latest" is: a new customer arrives after it.
                who = customer("Run Check", email, "1950-01-01")
                redis_client.zadd("Customer", {json.dumps(who): 0})
            if re.match(rf"\s*customers \| \|{re.escape(email)}\s*\|Run Check", line):
                break  # the console sink's row, in the customers job's lines
        else:
            pytest.fail("no console row of the new customer:\n" + "".join(lines[-50:]))
        assert started == set(QUERIES), "every job's query started, under its prefix"
        assert set(pids) == {"spark", "app"}, "one Spark engine and the app"
        assert httpx.get(f"http://127.0.0.1:{app_port}/health").status_code == 200
        assert httpx.get("http://127.0.0.1:4040/StreamingQuery/").status_code == 200
    finally:
        os.killpg(run.pid, signal.SIGINT)  # Ctrl-C reaches the terminal's whole group
        run.wait(timeout=120)
        reader.join(timeout=10)
        rest = "".join(output.queue)
    # make itself got the Ctrl-C too and ends by it once `run` is done.
    assert run.returncode in (0, -signal.SIGINT), rest
    assert "stopped spark" in rest and "stopped app" in rest
    assert "stopping the queries" in rest, "the engine stopped its queries itself"
    assert not [name for name, pid in pids.items() if group_alive(pid)], "processes left behind"
    with pytest.raises(httpx.ConnectError):
        httpx.get(f"http://127.0.0.1:{app_port}/health")
    with pytest.raises(httpx.ConnectError):
        httpx.get("http://127.0.0.1:4040/")
    assert services.leftovers() == [], "processes of this checkout left behind"
    assert services.is_up(), "the stack it did not start keeps running"
