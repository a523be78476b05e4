"""A tiny `make bench` through the real stack and spark-submit: every figure is there and sane.

Speed is not asserted here (that is the bench's job); counts and shapes are.
"""

import json
import os
import re
import subprocess
import sys
from importlib.metadata import version

import pytest
from kafka import KafkaAdminClient

from stedi.stack import services

pytestmark = [pytest.mark.integration, pytest.mark.slow]

EVENTS, CUSTOMERS, LATENCY_SECONDS, LATENCY_RATE = 300, 30, 5, 100
# 400 = 30 x 13 + 10: 10 customers take 14 tests (11 scores each), 20 take 13 (10 each).
SCORE_TESTS, SCORES = 400, 10 * 11 + 20 * 10
APP_USERS, APP_TESTS, APP_VIEWERS, APP_POINTS = 10_000, 50_000, 20, 10


@pytest.fixture(scope="module")
def bench_run(stack, tmp_path_factory):
    """One tiny run of the harness: its results.json and its printed table."""
    results = tmp_path_factory.mktemp("bench") / "results.json"
    env = {
        **os.environ,
        "BENCH_EVENTS": str(EVENTS),
        "BENCH_CUSTOMERS": str(CUSTOMERS),
        "BENCH_LATENCY_SECONDS": str(LATENCY_SECONDS),
        "BENCH_LATENCY_RATE": str(LATENCY_RATE),
        "BENCH_REDIS_RECORDS": "200",
        "BENCH_SCORE_TESTS": str(SCORE_TESTS),
        "BENCH_RESULTS": str(results),
        # make run at 30x: a first score within seconds; a short steady state.
        "BENCH_PIPELINE_SPEED": "30",
        "BENCH_PIPELINE_SECONDS": "5",
        "BENCH_PIPELINE_SETTLE_SECONDS": "2",
        # The peer's 800 state store instances (Spark's default 200 partitions) are what
        # took longest here, for 300 records: shapes are checked, not speed.
        "BENCH_PEER_SHUFFLE_PARTITIONS": "2",
        # The trickle and the idle wrappers, briefly.
        "BENCH_TRICKLE_INTERVAL_MS": "1000",
        "BENCH_TRICKLE_SETTLE_SECONDS": "2",
        "BENCH_TRICKLE_SECONDS": "6",
        "BENCH_WRAPPERS_SETTLE_SECONDS": "15",
        "BENCH_WRAPPERS_SECONDS": "3",
        # The app section at issue 35's small scale, briefly.
        "BENCH_APP_USERS": str(APP_USERS),
        "BENCH_APP_TESTS": str(APP_TESTS),
        "BENCH_APP_CLIENTS": "10",
        "BENCH_APP_LOAD_SECONDS": "5",
        "BENCH_APP_VIEWERS": str(APP_VIEWERS),
        "BENCH_APP_POINTS": str(APP_POINTS),
    }
    run = subprocess.run(
        [sys.executable, "-m", "bench.run"],
        cwd=services.ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=1500,
    )
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-5000:]
    return json.loads(results.read_text()), run.stdout


@pytest.mark.timeout(1800)  # four spark-submit runs; slow on a busy 2-core machine
def test_tiny_bench_writes_every_key_of_issue_14(bench_run):
    results, _ = bench_run
    assert set(results["join"]) >= {"events", "seconds", "throughput_eps", "state_rows"}
    assert set(results["peer_join"]) >= {"events", "seconds", "throughput_eps"}
    assert set(results["kafka_limit"]) >= {"consumer_eps", "roundtrip_p50_ms", "roundtrip_p99_ms"}
    assert set(results["latency"]) >= {"rate_eps", "p50_ms", "p99_ms", "max_ms"}
    assert set(results["risk_score"]) >= {
        "tests",
        "seconds",
        "throughput_tps",
        "state_rows",
        "scores",
        "wall_s",
        "driver_peak_rss_mb",
    }
    assert set(results["machine"]) >= {"cores", "memory_gb", "spark", "kafka"}
    assert results["startup_s"] > 0
    pipeline = results["pipeline"]
    assert set(pipeline) >= {
        "sim_speed",
        "seconds",
        "cores",
        "rss_mb",
        "publish_to_output_p50_ms",
        "publish_to_output_p99_ms",
        "first_output_s",
    }
    assert pipeline["sim_speed"] == 30
    assert pipeline["scores"] > 0  # the app's scores reached the output, each matched
    assert 0 < pipeline["publish_to_output_p50_ms"] <= pipeline["publish_to_output_p99_ms"]
    assert pipeline["rss_mb"] > 300 and pipeline["cores"] > 0  # the engine's JVM was sampled
    by_process = pipeline["cores_by_process"]
    assert {"spark engine", "kafka", "redis", "redis source", "app"} <= set(by_process)
    assert sum(by_process.values()) == pytest.approx(pipeline["cores"], abs=0.01)
    assert results["driver_peak_rss_mb"] > 100  # a Spark driver JVM, found and sampled


@pytest.mark.timeout(1800)
@pytest.mark.parametrize("job", ["join", "peer_join"])
def test_both_jobs_process_the_whole_backlog_once(bench_run, job):
    figures = bench_run[0][job]
    assert figures["events"] == EVENTS
    assert figures["customers"] == CUSTOMERS
    assert figures["input_rows"] == EVENTS + CUSTOMERS
    assert figures["output_records"] == EVENTS  # one joined record per risk score
    assert 0 < figures["seconds"] < figures["wall_s"]  # start-up is left out
    assert figures["throughput_eps"] == pytest.approx(EVENTS / figures["seconds"], rel=0.01)


@pytest.mark.timeout(1800)
def test_risk_score_job_scores_every_history_from_the_fourth_test_on(bench_run):
    score = bench_run[0]["risk_score"]
    assert score["tests"] == SCORE_TESTS
    assert score["customers"] == CUSTOMERS
    assert score["scores"] == SCORES
    assert score["app_scores"] == SCORES  # the app's scores of the same tests, to check against
    assert score["checks"] == score["agreeing"] == SCORES
    assert score["dead_letters"] == 0
    assert 0 < score["seconds"] < score["wall_s"]  # start-up is left out
    assert score["throughput_tps"] == pytest.approx(SCORE_TESTS / score["seconds"], rel=0.01)
    assert score["driver_peak_rss_mb"] > 100


@pytest.mark.timeout(1800)
def test_risk_score_state_is_one_row_per_customer_whatever_its_history(bench_run):
    # A customer's row holds its last four tests and the scores waiting for the app's, so
    # 13 or 14 tests each still leave exactly one row per customer.
    assert bench_run[0]["risk_score"]["state_rows"] == CUSTOMERS


@pytest.mark.timeout(1800)
def test_the_table_shows_the_risk_score_figures(bench_run):
    results, table = bench_run
    score = results["risk_score"]
    assert "| the risk-score job (sparkpyriskscore.py) |" in table
    section = table.split("| the risk-score job (sparkpyriskscore.py) |")[1].split("\n\n")[0]
    assert f"| **{score['throughput_tps']:,.0f}** |" in section
    assert f"| state rows at the end of the backlog | {CUSTOMERS:,} |" in section
    assert f"| {SCORES:,} / {SCORES:,} of {SCORES:,} |" in section


@pytest.mark.timeout(1800)
def test_kafka_limit_reads_the_same_backlog(bench_run):
    kafka = bench_run[0]["kafka_limit"]
    assert kafka["consumer_records"] == EVENTS
    assert kafka["consumer_eps"] > 0
    assert 0 <= kafka["roundtrip_p50_ms"] <= kafka["roundtrip_p99_ms"]


@pytest.mark.timeout(1800)
def test_every_fed_score_is_timed_from_producer_to_join_output(bench_run):
    latency = bench_run[0]["latency"]
    assert latency["scores"] == LATENCY_RATE * LATENCY_SECONDS
    assert latency["joined"] == latency["scores"]
    assert 0 < latency["p50_ms"] <= latency["p99_ms"] <= latency["max_ms"]
    assert latency["rate_eps"] == pytest.approx(LATENCY_RATE, rel=0.1)
    # the steady state leaves out at most half the feed (here 2 of its 5 s)
    assert latency["warmup_s"] == LATENCY_SECONDS // 2
    assert 0 < latency["steady_p50_ms"] <= latency["steady_p99_ms"] <= latency["max_ms"]


@pytest.mark.timeout(1800)
def test_ratios_table_and_machine_match_the_figures(bench_run):
    results, table = bench_run
    join, peer = results["join"]["throughput_eps"], results["peer_join"]["throughput_eps"]
    assert results["ratios"]["join_vs_peer"] == round(join / peer, 2)
    kafka = results["kafka_limit"]["consumer_eps"]
    assert results["ratios"]["join_vs_kafka_consumer"] == round(join / kafka, 4)
    assert f"join / peer: **{join / peer:,.2f}x**" in table
    join_marginal = results["join"]["marginal_s"]
    peer_marginal = results["peer_join"]["marginal_s"]
    assert join_marginal < results["join"]["wall_s"]  # an empty run costs something
    assert peer_marginal < results["peer_join"]["wall_s"]
    assert results["ratios"]["marginal_join_vs_peer"] == round(peer_marginal / join_marginal, 2)
    pom = (services.ROOT / "jvm" / "pom.xml").read_text()
    assert results["machine"]["kafka"] == re.search(r"<kafka.version>(.+)<", pom)[1]
    assert results["machine"]["spark"] == version("pyspark")
    assert results["machine"]["cores"] == os.cpu_count()


@pytest.mark.timeout(1800)
def test_the_trickle_divides_the_join_drivers_cpu_by_its_batches(bench_run):
    results, table = bench_run
    trickle = results["join"]["trickle"]
    assert trickle["batches"] > 0 and trickle["interval_ms"] == 1000
    assert trickle["cpu_s_per_batch"] > 0 and trickle["cores"] > 0
    per_batch = trickle["cores"] * trickle["seconds"] / trickle["batches"]
    assert trickle["cpu_s_per_batch"] == pytest.approx(per_batch, rel=0.05, abs=0.002)
    assert results["join"]["trickle_cpu_s_per_batch"] == trickle["cpu_s_per_batch"]
    assert f"**{trickle['cpu_s_per_batch']:,.3f}**" in table


@pytest.mark.timeout(1800)
def test_the_idle_wrappers_are_three_drivers_measured_together(bench_run):
    results, table = bench_run
    wrappers = results["wrappers"]
    assert wrappers["wrappers"] == ["submit-redis.sh", "submit-event.sh", "submit-join.sh"]
    # each: the wrapper, its spark-submit JVM and the JVM's Python driver, at least
    assert wrappers["processes"] >= 9
    assert wrappers["rss_mb"] > 3 * 100 and wrappers["cores"] > 0
    assert "the three card wrappers side by side, idle" in table


@pytest.mark.timeout(1800)
def test_the_run_deletes_the_topics_it_made(stack, bench_run):
    admin = KafkaAdminClient(bootstrap_servers=stack.kafka_bootstrap_servers)
    try:
        left = [t for t in admin.list_topics() if bench_run[0]["run_id"] in t]
    finally:
        admin.close()
    assert left == []


@pytest.mark.timeout(1800)
def test_the_app_section_measures_two_processes_on_the_seeded_redis(bench_run):
    results, table = bench_run
    app = results["app"]
    assert (app["users"], app["tests"], app["customers"]) == (APP_USERS, APP_TESTS, 1000)
    assert app["processes"] == len(app["start_s"]) == 2 and all(s > 0 for s in app["start_s"])
    assert app["index_pass_s"] >= 0 and app["health_max_ms_during_pass"] >= 0
    for kind in ("login_alone", "login", "timer_page", "customer_page", "post_test"):
        figures = app[kind]
        assert figures["count"] > 0, kind
        assert 0 < figures["p50_ms"] <= figures["p99_ms"] <= figures["max_ms"], kind
    assert app["login"]["count"] == 5 * 2  # BENCH_APP_LOGIN_RATE's 2 a second for 5 s
    assert app["argon2_ms"] > 0 and app["requests_per_s"] > 0
    # Every live graph got every point, each timed from its record.
    assert (app["viewers"], app["points"]) == (APP_VIEWERS, APP_POINTS)
    assert app["viewers_with_every_point"] == APP_VIEWERS and app["viewer_errors"] == []
    assert 0 < app["point_p50_ms"] <= app["point_p99_ms"] <= app["point_max_ms"]
    started, peaks = app["rss_after_start_mb"], app["rss_peak_mb"]
    assert all(0 < m <= p for m, p in zip(started, peaks, strict=True))
    assert f"the app: {APP_USERS:,} users, {APP_TESTS:,} tests, 2 processes" in table
