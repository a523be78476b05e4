"""`make run`: everything starts, without any test tool on PATH; every part serves its
metrics; Ctrl-C leaves nothing behind."""

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

from stedi.config import Settings
from stedi.stack import services
from stedi.stack.pipeline import group_alive
from tests import metrics_support
from tests.app_server import free_port
from tests.metrics_support import Scrape
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
    app_port, jobs_port = free_port(), free_port()
    env = {
        **os.environ,
        # A machine without the test tools: make run must not need them.
        "PATH": path_without(tmp_path / "bin", "go", "chromium"),
        "STEDI_APP_PORT": str(app_port),
        "STEDI_SPARK_METRICS_PORT": str(jobs_port),
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
        metrics_of_every_part("".join(lines), app_port, jobs_port, unique, redis_client)
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


def metrics_of_every_part(output: str, app_port: int, jobs_port: int, unique, redis_client):
    """Each endpoint make run names parses with prometheus_client's parser and holds its
    metrics; a new customer moves the source's and the customers job's figures; no
    customer's email or name shows in any of them."""
    assert f"http://127.0.0.1:{jobs_port}/metrics" in output, "make run names the endpoints"
    spark = re.search(r"\[engine\] metrics: (\S+) \(Spark\)", output).group(1)
    urls = {
        "app": f"http://127.0.0.1:{app_port}/metrics",
        "source": f"http://127.0.0.1:{Settings().redis_source_metrics_port}/metrics",
        "jobs": f"http://127.0.0.1:{jobs_port}/metrics",
        "spark": spark,
    }
    wanted = {
        "app": metrics_support.APP,
        "source": metrics_support.SOURCE,
        "jobs": metrics_support.JOBS,
        "spark": metrics_support.SPARK_JOIN,
    }
    texts = []
    for part, url in urls.items():
        scrape = Scrape(url)
        assert wanted[part] <= scrape.names(), part
        texts.append(scrape.text)
    published = "stedi_redis_source_records_published_total"
    before = Scrape(urls["source"]).value(published)
    email = f"Metric.Move.{unique}@test.com"
    redis_client.zadd("Customer", {json.dumps(customer("Metric Move", email, "1951-01-01")): 0})
    read, deadline = False, time.monotonic() + 60
    while not read:  # the customers job's batch that holds it reports a rate above zero
        assert time.monotonic() < deadline, "the customers job's figures did not move"
        jobs = Scrape(urls["jobs"])
        read = (jobs.value("stedi_spark_processed_rows_per_second", job="customers") or 0) > 0
        texts.append(jobs.text)
        time.sleep(0.3)
    assert Scrape(urls["source"]).value(published) > before
    caught_up, deadline = False, time.monotonic() + 60
    while not caught_up:  # nothing more is written: the join reads both topics to their end
        assert time.monotonic() < deadline, "the join's offsets behind did not fall to 0"
        behind = Scrape(urls["jobs"]).values("stedi_spark_offsets_behind_max", job="join")
        caught_up = len(behind) == 2 and set(behind) == {0.0}
        time.sleep(0.5)
    texts += [Scrape(url).text for url in urls.values()]
    for text in texts:
        for personal in (email, "Metric Move", f"Run.Check.{unique}@test.com", "Run Check"):
            assert personal not in text
