"""sparkpyriskscore.py through `make run`: the simulator at 30x, real Kafka, spark-submit;
the score job catches up through its wrapper, the join runs as its query in the test process.

The app publishes its scores on a fresh events topic; the Redis source publishes
the tests on the stack's `redis-server`, which every job reads from where it stood
before `make run` started (the simulator's customers are new, so that is their
whole history).

The same `make run` is checked while it runs first (`live_run`): it needs no test tool
on PATH, runs one Spark engine and the app, prints each job's lines under its prefix and
names every metrics endpoint; the join's offsets behind fall to 0 once the simulator
stops (issue 25); the graph page's status panel, in Chromium, shows every part green, the
join red once `stop-job` hands it over, and green again once `./submit-join.sh` runs it
alone. Then `simulated_run` stops it (Ctrl-C), which leaves nothing behind.
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
import uuid
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest
from kafka import KafkaConsumer, TopicPartition
from playwright.sync_api import expect, sync_playwright

from stedi.app.pipeline_status import JOB_SCRIPTS
from stedi.config import Settings
from stedi.stack import drivers, services
from stedi.stack.pipeline import group_alive
from stedi.stack.services import ROOT
from tests import metrics_support
from tests.app_server import ADMIN_EMAIL, ADMIN_PASSWORD, AppServer, free_port, log_in, logged_in
from tests.background import Background
from tests.browser.test_graph import CHROMIUM, CHROMIUM_ARGS, page_errors
from tests.browser.test_graph import log_in as log_in_page
from tests.browser.test_status_panel import PARTS, state_of
from tests.metrics_support import Scrape
from tests.records import customer
from tests.scripts import join_job
from tests.shell_support import path_without
from tests.stack_support import TopicReader, create_topics, observed_totals, read_all, submit

pytestmark = [pytest.mark.integration, pytest.mark.slow]

MIN_SCORES = 100


def end_offset(settings, topic: str) -> int:
    consumer = KafkaConsumer(bootstrap_servers=settings.kafka_bootstrap_servers)
    try:
        tp = TopicPartition(topic, 0)
        return consumer.end_offsets([tp])[tp]
    finally:
        consumer.close()


def values_of(settings, topic: str) -> list:
    """Every record a topic holds now, values parsed."""
    records = read_all(settings, topic, end_offset(settings, topic), timeout=60)
    return [json.loads(r.value) for r in records]


def wait_until_quiet(settings, topic: str, quiet_s: float = 3.0, timeout: float = 60.0) -> None:
    """Returns once the topic's end offset has not moved for `quiet_s`."""
    deadline, last, since = time.monotonic() + timeout, -1, time.monotonic()
    while time.monotonic() < deadline:
        offset = end_offset(settings, topic)
        if offset != last:
            last, since = offset, time.monotonic()
        elif time.monotonic() - since >= quiet_s:
            return
        time.sleep(0.5)
    raise AssertionError(f"{topic} still grows after {timeout} s")


@dataclass
class LiveRun:
    """`make run` while it runs: where its app and its engine's jobs metrics are, and the
    environment it runs with (a user's terminal: the wrappers and `stop-job` get it too)."""

    process: subprocess.Popen
    app_port: int
    jobs_port: int  # the engine's jobs metrics
    env: dict
    jobs_env: dict
    topics: dict
    tmp_path: Path
    log_path: Path

    @property
    def url(self) -> str:  # the app
        return f"http://127.0.0.1:{self.app_port}"

    @property
    def jobs_url(self) -> str:
        return f"http://127.0.0.1:{self.jobs_port}/metrics"

    def output(self) -> str:
        return self.log_path.read_text(errors="replace")

    def client(self) -> httpx.Client:  # as AppServer's: tests.app_server's steps take it
        return httpx.Client(base_url=self.url, timeout=10)

    def stop(self) -> None:
        """Ctrl-C, as in a terminal, and wait for the end; a second call does nothing."""
        if self.process.poll() is None:
            os.killpg(self.process.pid, signal.SIGINT)
        self.process.wait(timeout=120)


@pytest.fixture(scope="module")
def live_run(stack, tmp_path_factory):
    """`make run` with the simulator at 30x on fresh topics, running, once Spark has checked
    MIN_SCORES + 20 of the app's scores; stopped (Ctrl-C) at the end of the module, or
    earlier by `simulated_run`. The simulation is the admin's of tests/app_server.py."""
    unique, tmp_path = uuid.uuid4().hex[:10], tmp_path_factory.mktemp("risk-score")
    topics = {
        "STEDI_EVENTS_TOPIC": f"stedi-events-{unique}",
        "STEDI_SPARK_RISK_TOPIC": f"stedi-risk-spark-{unique}",
        "STEDI_RISK_QUALITY_TOPIC": f"risk-quality-{unique}",
        "STEDI_DEAD_LETTER_TOPIC": f"dead-letter-{unique}",
        "KAFKA_RISK_TOPIC": f"customer-risk-{unique}",
    }
    create_topics(stack, *topics.values())
    redis_start = end_offset(stack, stack.redis_topic)
    offsets = {stack.redis_topic: {"0": redis_start}, topics["STEDI_EVENTS_TOPIC"]: {"0": -2}}
    jobs_env = {
        **topics,
        "STEDI_CHECKPOINT_DIR": str(tmp_path / "checkpoints"),
        "STEDI_STARTING_OFFSETS": json.dumps(offsets),
    }
    app_port, jobs_port = free_port(), free_port()
    env = {
        **os.environ,
        **jobs_env,
        # A machine without the test tools: make run must not need them.
        "PATH": path_without(tmp_path / "bin", "go", "chromium"),
        "STEDI_APP_PORT": str(app_port),
        "STEDI_SPARK_METRICS_PORT": str(jobs_port),
        "STEDI_ADMIN_USER": ADMIN_EMAIL,  # the simulation's owner, who may switch it off
        "STEDI_ADMIN_PASSWORD": ADMIN_PASSWORD,
        "STEDI_SIMULATE": "1",
        "STEDI_SIM_SPEED": "30",
    }
    log_path = tmp_path / "make-run.log"
    reader = TopicReader(stack, topics["STEDI_RISK_QUALITY_TOPIC"])
    with open(log_path, "wb") as log:
        run = subprocess.Popen(
            ["make", "--no-print-directory", "run"],
            cwd=ROOT,
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,  # its own process group, as in a terminal
        )
    live = LiveRun(
        run,
        app_port,
        jobs_port,
        env,
        jobs_env,
        topics,
        tmp_path,
        log_path,
    )
    try:
        try:
            checks = reader.read(lambda rs: len(rs) >= MIN_SCORES + 20 or run.poll(), timeout=480)
        finally:
            reader.close()
        assert len(checks) >= MIN_SCORES + 20, log_path.read_text()[-3000:]
        yield live
    finally:
        live.stop()


def switch_simulation(live_run: LiveRun, active: bool) -> None:
    """The admin's simulation on or off, as its owner does on the Timer page."""
    client, token = log_in(live_run, ADMIN_EMAIL, ADMIN_PASSWORD)
    switched = client.post(
        "/api/simulation", json={"active": active}, headers={"X-CSRF-Token": token}
    )
    assert switched.status_code == 200 and switched.json()["active"] is active


@pytest.fixture(scope="module")
def simulated_run(stack, live_run):
    """The live run stopped (Ctrl-C) while the simulator runs (the live checks switched it
    off: on again, until Spark checks new scores); then the score job catches up from its
    checkpoint on the tests the app stored before it stopped.

    Returns the topics, the app's scores, the catch-up run's output, the folder
    and the starting offsets of every job (the stack's `redis-server` from the
    run's start, the events topic from its beginning).
    """
    reader = TopicReader(stack, live_run.topics["STEDI_RISK_QUALITY_TOPIC"])
    try:
        switch_simulation(live_run, True)
        news = reader.read(lambda rs: len(rs) > 0 or live_run.process.poll(), timeout=240)
    finally:
        reader.close()
        live_run.stop()
    assert news, live_run.log_path.read_text()[-3000:]
    # every test the app stored has reached `redis-server` before Spark catches up
    wait_until_quiet(stack, stack.redis_topic)
    app_scores = values_of(stack, live_run.topics["STEDI_EVENTS_TOPIC"])
    output = submit("submit-score.sh", live_run.jobs_env)  # the score wrapper's own run too
    offsets = live_run.jobs_env["STEDI_STARTING_OFFSETS"]
    return live_run.topics, app_scores, output, live_run.tmp_path, offsets


def join_lag(scrape: Scrape) -> dict[str, float]:
    """The join's offsets behind (the most of a partition), by topic."""
    return {
        sample.labels["topic"]: sample.value
        for family in scrape.families
        for sample in family.samples
        if sample.name == "stedi_spark_offsets_behind_max" and sample.labels.get("job") == "join"
    }


def customers_emails(stack, live_run) -> set[str]:
    """The simulated customers' emails, from the app's scores so far."""
    return {score["customer"] for score in values_of(stack, live_run.topics["STEDI_EVENTS_TOPIC"])}


# Each job's query, as the status panel knows it (its unit test checks the scripts' names).
QUERIES = {job: query for job, (_, query) in JOB_SCRIPTS.items()}


def announced_pids(output: str) -> dict[str, int]:
    """What make run started, by name, from its `>> name: ... (pid N)` lines."""
    return {m.group(1): int(m.group(2)) for m in re.finditer(r">> (\w+): .* \(pid (\d+)\)", output)}


def engine_ui(output: str) -> str:
    return re.search(r"\[engine\] Spark \S+ up, UI (\S+)", output).group(1)


def test_run_starts_the_app_and_one_engine_and_each_jobs_lines_carry_its_prefix(stack, live_run):
    """One Spark engine runs the four jobs beside the app; each job's lines, the console
    rows too, come with the job's prefix (moved here from its own `make run`)."""
    output = live_run.output()
    assert set(announced_pids(output)) == {"spark", "app"}, "one Spark engine and the app"
    started = re.findall(r"^\s*(\w+) \| \[([\w-]+)\] started", output, re.MULTILINE)
    assert set(started) == set(QUERIES.items()), "every job's query started, under its prefix"
    emails = customers_emails(stack, live_run)
    rows = re.findall(r"^\s*customers \| \|(\S+@\S+)\s*\|", output, re.MULTILINE)
    assert emails & set(rows), (
        "the console sink's rows of new customers, in the customers job's lines"
    )
    assert httpx.get(f"{live_run.url}/health").status_code == 200
    assert httpx.get(f"{engine_ui(output)}/StreamingQuery/").status_code == 200


def test_every_part_serves_its_metrics_without_personal_data(stack, live_run, redis_client):
    """Each endpoint make run names parses with prometheus_client's parser and holds its
    metrics; a new customer moves the source's and the customers job's figures; no
    customer's email or name shows in any of them."""
    output = live_run.output()
    assert live_run.jobs_url in output, "make run names the endpoints"
    urls = {
        "app": f"{live_run.url}/metrics",
        "source": f"http://127.0.0.1:{Settings().redis_source_metrics_port}/metrics",
        "jobs": live_run.jobs_url,
        "spark": re.search(r"\[engine\] metrics: (\S+) \(Spark\)", output).group(1),
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
    email = f"Metric.Move.{uuid.uuid4().hex[:10]}@test.com"
    redis_client.zadd("Customer", {json.dumps(customer("Metric Move", email, "1951-01-01")): 0})
    read, deadline = False, time.monotonic() + 60
    while not read:  # the customers job's batch that holds it reports a rate above zero
        assert time.monotonic() < deadline, "the customers job's figures did not move"
        jobs = Scrape(urls["jobs"])
        read = (jobs.value("stedi_spark_processed_rows_per_second", job="customers") or 0) > 0
        texts.append(jobs.text)
        time.sleep(0.3)
    assert Scrape(urls["source"]).value(published) > before
    texts += [Scrape(url).text for url in urls.values()]
    personal = {email, "Metric Move", *customers_emails(stack, live_run)}
    assert not [p for p in personal if any(p in text for text in texts)]


def test_the_joins_offsets_behind_fall_to_0_once_the_simulator_stops(stack, live_run):
    topics = {stack.redis_topic, live_run.topics["STEDI_EVENTS_TOPIC"]}
    running = Scrape(live_run.jobs_url)
    assert set(join_lag(running)) == topics, running.text  # both of the join's topics
    switch_simulation(live_run, False)
    wait_until_quiet(stack, live_run.topics["STEDI_EVENTS_TOPIC"])  # its last scores are out
    quiet_since, deadline = time.monotonic(), time.monotonic() + 60
    texts, lags = [running.text], [join_lag(running)]
    while True:  # a progress event after the last score, with nothing left to read
        scrape = Scrape(live_run.jobs_url)
        texts.append(scrape.text)
        lags.append(join_lag(scrape))
        age = scrape.value("stedi_spark_last_progress_age_seconds", job="join")
        if set(lags[-1]) == topics and set(lags[-1].values()) == {0.0}:
            if age is not None and age < time.monotonic() - quiet_since:
                break
        assert time.monotonic() < deadline, f"the join's offsets behind stay at {lags[-1]}"
        time.sleep(0.5)
    print(f"the join's most offsets behind, per scrape: {[max(lag.values()) for lag in lags]}")
    emails = customers_emails(stack, live_run)
    assert emails and not [e for e in emails if any(e in text for text in texts)]


@pytest.mark.browser
def test_the_status_panel_shows_a_join_handed_over_to_its_wrapper_red_then_green(
    stack, live_run, tmp_path
):
    """Every part green; `stop-job join` (as a user runs it): the join red within 10 s,
    the others still green; `./submit-join.sh` from make run's checkpoint: green again,
    read from its own driver; that driver killed: red again, and nothing left behind."""
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        try:
            page = browser.new_page(viewport={"width": 1100, "height": 900})
            errors = page_errors(page)
            log_in_page(page, live_run.url)
            page.goto(f"{live_run.url}/graph")
            for part in PARTS:
                expect(state_of(page, part)).to_have_text("green", timeout=30_000)

            stop = subprocess.run(
                [sys.executable, "-m", "stedi.stack", "stop-job", "join"],
                cwd=ROOT,
                env=live_run.env,
                capture_output=True,
                text=True,
                timeout=180,
            )
            assert stop.returncode == 0, stop.stdout + stop.stderr
            assert "./submit-join.sh runs it alone" in stop.stdout
            expect(state_of(page, "join")).to_have_text("red", timeout=10_000)
            for part in ("redis source", "customers", "risk", "score"):
                expect(state_of(page, part)).to_have_text("green")
            said = "[engine] join: stopped on request; run ./submit-join.sh to run it yourself"
            deadline = time.monotonic() + 10
            while said not in live_run.log_path.read_text():  # make run's follower shows it
                assert time.monotonic() < deadline, live_run.log_path.read_text()[-2000:]
                time.sleep(0.3)

            join = Background(
                [str(ROOT / "submit-join.sh")],
                {**live_run.env, "STEDI_SUBMIT": "local"},
                tmp_path / "submit-join.log",
            )
            try:
                row = page.locator('#pipeline-status tr[data-part="join"]')
                expect(state_of(page, "join")).to_have_text("green", timeout=240_000)
                expect(row).to_contain_text("run alone (sparkpykafkajoin.py")
                announced = drivers.announced(Settings().stack_dir, "sparkpykafkajoin.py")
                assert announced["pid"] == join.pid  # the wrapper's, alive with its driver
                assert Path(f"/proc/{join.pid}").exists()
                servlet = Scrape(f"{announced['ui']}/metrics/prometheus/")
                assert "customer_risk_join_latency_Value" in servlet.text
                lines = logged_in(live_run)[0].get("/api/pipeline-status").json()["lines"]
                panel = page.locator("#pipeline-status").inner_text()
                emails = customers_emails(stack, live_run)
                outputs = (servlet.text, json.dumps(lines), panel)
                assert emails and not [e for e in emails if any(e in out for out in outputs)]
                join.kill()  # kill -9 of its process group: its driver stops answering
            finally:
                join.stop()  # when a check above failed
            deadline = time.monotonic() + 30
            while group_alive(join.pid):  # the JVM's Python driver goes with it
                assert time.monotonic() < deadline, "the standalone join left processes behind"
                time.sleep(0.3)
            expect(state_of(page, "join")).to_have_text("red", timeout=10_000)
            assert errors == [], errors
        finally:
            browser.close()


def test_ctrl_c_stops_everything_make_run_started(stack, live_run, simulated_run):
    """simulated_run's Ctrl-C (make's whole process group, as a terminal's) leaves no
    process, port or part of this checkout behind, and the stack make run did not start
    keeps running."""
    output = live_run.output()
    # make itself got the Ctrl-C too and ends by it once `run` is done.
    assert live_run.process.returncode in (0, -signal.SIGINT), output[-3000:]
    assert "stopped spark" in output and "stopped app" in output
    assert "stopping the queries" in output, "the engine stopped its queries itself"
    pids = announced_pids(output)
    assert not [name for name, pid in pids.items() if group_alive(pid)], "processes left behind"
    with pytest.raises(httpx.ConnectError):
        httpx.get(f"{live_run.url}/health")
    with pytest.raises(httpx.ConnectError):
        httpx.get(engine_ui(output))
    assert services.leftovers() == [], "processes of this checkout left behind"
    assert services.is_up(), "the stack it did not start keeps running"


def as_text(value: dict) -> str:
    return json.dumps(value, sort_keys=True)


def test_spark_scores_agree_with_every_app_score(stack, simulated_run):
    topics, app_scores, output, _, _ = simulated_run
    spark_scores = values_of(stack, topics["STEDI_SPARK_RISK_TOPIC"])
    checks = values_of(stack, topics["STEDI_RISK_QUALITY_TOPIC"])
    assert len(app_scores) >= MIN_SCORES + 20
    # Kafka's sink writes at least once: a batch the Ctrl-C cut short is written again
    # by the catch-up run, so a score may appear twice, never be missing.
    assert {as_text(s) for s in spark_scores} == {as_text(s) for s in app_scores}
    assert len(checks) >= len(app_scores)
    assert all(c["agree"] is True and c["sparkScore"] == c["appScore"] for c in checks)
    assert {(c["customer"], c["riskDate"]) for c in checks} == {
        (s["customer"], s["riskDate"]) for s in app_scores
    }
    totals = observed_totals(output, "risk-score")  # the wrapper's own run
    assert totals["checks"] == totals["agreeing"] > 0, output[-3000:]


def test_the_join_fed_from_spark_scores_writes_the_same_records(
    stack, unique, simulated_run, kafka_spark
):
    """The join's query in this process (kafka_spark), once per score source."""
    topics, app_scores, _, tmp_path, offsets = simulated_run
    outputs = {}
    for source in ("STEDI_EVENTS_TOPIC", "STEDI_SPARK_RISK_TOPIC"):
        name = source.lower().replace("_", "-")
        risk_topic = f"customer-risk-{name}-{unique}"
        create_topics(stack, risk_topic)
        kafka_spark(
            join_job,
            {
                "STEDI_EVENTS_TOPIC": topics[source],
                "KAFKA_RISK_TOPIC": risk_topic,
                "STEDI_DEAD_LETTER_TOPIC": topics["STEDI_DEAD_LETTER_TOPIC"],
                "STEDI_CHECKPOINT_DIR": str(tmp_path / f"join-{name}"),
                # Names `redis-server` and the events topic, not the Spark scores' topic:
                # each of the join's two sources takes its own part, or earliest.
                "STEDI_STARTING_OFFSETS": offsets,
            },
        )
        outputs[source] = values_of(stack, risk_topic)
    # One output per assessment read: the app's scores, and Spark's, whose exact repeats
    # (the score job's catch-up may write a batch again) the join's repeat filter drops:
    # they all arrive in one run, within one STEDI_RISK_WAIT.
    assert len(outputs["STEDI_EVENTS_TOPIC"]) == len(app_scores)
    spark_scores = values_of(stack, topics["STEDI_SPARK_RISK_TOPIC"])
    assessments = {(s["customer"], s["score"], s["riskDate"]) for s in spark_scores}
    assert len(outputs["STEDI_SPARK_RISK_TOPIC"]) == len(assessments)
    assert {as_text(v) for v in outputs["STEDI_SPARK_RISK_TOPIC"]} == {
        as_text(v) for v in outputs["STEDI_EVENTS_TOPIC"]
    }


def test_the_graph_page_says_how_many_scores_were_checked_and_agreed(
    stack, simulated_run, tmp_path
):
    topics = simulated_run[0]
    env = {"STEDI_RISK_QUALITY_TOPIC": topics["STEDI_RISK_QUALITY_TOPIC"]}
    checks = end_offset(stack, topics["STEDI_RISK_QUALITY_TOPIC"])
    app = AppServer(env, tmp_path / "app.log")
    try:
        client, _ = logged_in(app)
        expected = f"scores checked: {checks}, agreeing: {checks}"
        deadline, page = time.monotonic() + 30, ""
        while expected not in page and time.monotonic() < deadline:
            page = client.get("/graph").text
            time.sleep(0.5)
        assert expected in page
    finally:
        app.stop()
