"""The whole local pipeline as a user runs it: `make run` with the simulator on.

Starts `make run` with STEDI_SIMULATE=1 at a simulator speed, its own
checkpoints and its own output topics, and measures:
- first_output_s: from launching `make run` to the first record on the output topic;
- cores and rss_mb: over `seconds` of steady state (from a short settling time
  after the first output), the CPU time and resident memory of everything
  `make run` started and of the local stack's services (Kafka, Redis, the Redis
  source), even when `make up` started them before;
- publish_to_output_p50_ms/p99_ms: for each risk score the app published on
  `stedi-events` in that window, its Kafka timestamp to that of its record on the
  output topic (per customer, in order: each score gives one output).
Ctrl-C then stops `make run`, and nothing it started may be left.

    .venv/bin/python -m bench.pipeline [--speed N] [--seconds S]
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections import defaultdict
from collections.abc import Callable, Iterable
from pathlib import Path

from kafka import KafkaConsumer, TopicPartition
from kafka.errors import KafkaError

from bench.latency import percentile
from bench.settings import ROOT, BenchSettings
from stedi.config import Settings
from stedi.stack import services
from stedi.stack.process import descendants

CLOCK_TICKS = os.sysconf("SC_CLK_TCK")
PAGE_KB = os.sysconf("SC_PAGE_SIZE") // 1024


def cpu_seconds(pid: int) -> float | None:
    """User + system CPU time of one process and of its children that have ended, None
    if it is gone.

    The ended children count: a process that lives less than a sample apart (Hadoop's
    `chmod` per checkpoint file before the forkless file system, an `rm -rf` of a RocksDB
    folder now) is gone before a sample sees it. (A child that ends after a sample saw it
    counts twice; the long-lived ones never end in the window, and Spark reuses its
    Python workers.)
    """
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return None
    # utime, stime, cutime, cstime (fields 14 to 17 of proc(5))
    return sum(int(value) for value in fields[11:15]) / CLOCK_TICKS


def rss_kb(pid: int) -> int:
    try:
        return int(Path(f"/proc/{pid}/statm").read_text().split()[1]) * PAGE_KB
    except OSError:
        return 0


def pipeline_pids(run_pid: int) -> set[int]:
    """`make run`'s process tree and the stack's services, whoever started them."""
    stack = {s.pid() for s in services.STACK}
    return {*descendants(run_pid), *(p for p in stack if p is not None)}


# What a process of the pipeline is, by a part of its command line (the first that matches).
PROCESS_KINDS = (
    ("SparkSubmit", "spark engine"),
    ("stedi/stack/engine.py", "spark engine"),
    ("pyspark", "spark engine"),  # its Python workers
    ("stedi.stack", "make run"),
    ("kafka.Kafka", "kafka"),
    ("redis-server", "redis"),
    ("stedi.redis_source", "redis source"),
    ("stedi.app", "app"),
)


def process_kind(pid: int) -> str:
    try:
        command = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode()
    except OSError:
        return "other"
    return next((kind for part, kind in PROCESS_KINDS if part in command), "other")


class Usage:
    """CPU and RSS of a changing set of processes (`pids()`), sampled once a second."""

    def __init__(self, pids: Callable[[], Iterable[int]]):
        self.pids = pids
        self.cpu: dict[int, float] = {}  # pid -> CPU seconds at the first sample that saw it
        self.last: dict[int, float] = {}
        self.kinds: dict[int, str] = {}
        self.rss_samples: list[int] = []
        self.began = time.monotonic()

    def sample(self) -> None:
        total_rss = 0
        for pid in self.pids():
            used = cpu_seconds(pid)
            if used is None:
                continue
            self.cpu.setdefault(pid, used)
            if pid not in self.kinds:
                self.kinds[pid] = process_kind(pid)
            self.last[pid] = used
            total_rss += rss_kb(pid)
        self.rss_samples.append(total_rss)

    def result(self) -> dict:
        seconds = time.monotonic() - self.began
        used = sum(self.last[pid] - self.cpu[pid] for pid in self.last)
        by_kind: dict[str, float] = defaultdict(float)
        for pid in self.last:
            by_kind[self.kinds[pid]] += (self.last[pid] - self.cpu[pid]) / seconds
        return {
            "cores_by_process": {k: round(v, 3) for k, v in sorted(by_kind.items())},
            "seconds": round(seconds, 1),
            "cores": round(used / seconds, 3),
            "rss_mb": round(sum(self.rss_samples) / len(self.rss_samples) / 1024),
            "rss_max_mb": round(max(self.rss_samples) / 1024),
        }


class TopicLog(threading.Thread):
    """Every record of `topic`, from its start: (key, Kafka timestamp ms, seen at).

    From the start, since the job reads its inputs from the start too (fresh
    checkpoints): every score on `stedi-events` gives an output, old ones included.
    """

    def __init__(self, consumer: KafkaConsumer, key_of):
        super().__init__(daemon=True)
        self.consumer = consumer
        self.key_of = key_of
        self.records: list[tuple[str, int, float]] = []
        self.stopped = threading.Event()

    @classmethod
    def open(cls, settings: Settings, topic: str, key_of) -> TopicLog | None:
        """None while the broker or the topic does not exist yet."""
        try:
            consumer = KafkaConsumer(
                bootstrap_servers=settings.kafka_bootstrap_servers, enable_auto_commit=False
            )
        except KafkaError:
            return None
        partitions = consumer.partitions_for_topic(topic)
        if not partitions:
            consumer.close()
            return None
        assigned = [TopicPartition(topic, p) for p in partitions]
        consumer.assign(assigned)
        consumer.seek_to_beginning(*assigned)
        topic_log = cls(consumer, key_of)
        topic_log.start()
        return topic_log

    def run(self) -> None:
        while not self.stopped.is_set():
            for batch in self.consumer.poll(timeout_ms=200).values():
                for r in batch:
                    self.records.append((self.key_of(r), r.timestamp, time.monotonic()))

    def stop(self) -> None:
        self.stopped.set()
        self.join()
        self.consumer.close()


def latencies_ms(published: list, outputs: list, since_ms: int, until_ms: int) -> list[int]:
    """Per customer, the n-th published score pairs with the n-th output record; the
    latencies of the scores published in [since_ms, until_ms) whose output arrived."""
    sent: dict[str, list[int]] = defaultdict(list)
    out: dict[str, list[int]] = defaultdict(list)
    for customer, ts, _ in published:
        sent[customer].append(ts)
    for email, ts, _ in outputs:
        out[email].append(ts)
    pairs = (
        (sent_ms, out_ms)
        for customer, times in sent.items()
        for sent_ms, out_ms in zip(times, out[customer], strict=False)
    )
    return sorted(o - s for s, o in pairs if since_ms <= s < until_ms)


def run_pipeline(speed: float, seconds: int, log: Path, settle_s: int) -> dict:
    """make run with the simulator; its window starts `settle_s` after the first output,
    once the start-up's backlog is done."""
    settings = Settings()
    run_id = uuid.uuid4().hex[:8]
    output = f"bench-pipeline-out-{run_id}"
    env = {
        **os.environ,
        "STEDI_SIMULATE": "1",
        "STEDI_SIM_SPEED": str(speed),
        "KAFKA_RISK_TOPIC": output,
        "STEDI_DEAD_LETTER_TOPIC": f"bench-pipeline-dead-{run_id}",
        "STEDI_SPARK_RISK_TOPIC": f"bench-pipeline-spark-risk-{run_id}",
        "STEDI_RISK_QUALITY_TOPIC": f"bench-pipeline-quality-{run_id}",
        "STEDI_CHECKPOINT_DIR": tempfile.mkdtemp(prefix="bench-pipeline-"),
    }
    print(f">> pipeline: make run, simulator x{speed}, log {log}", file=sys.stderr, flush=True)
    began = time.monotonic()
    with open(log, "wb") as out:
        run = subprocess.Popen(
            ["make", "--no-print-directory", "run"],
            cwd=ROOT,
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,  # its own group, as in a terminal: Ctrl-C reaches it all
        )
    published = outputs = None
    try:
        published = _wait_for_topic_log(
            settings, settings.events_topic, lambda r: json.loads(r.value)["customer"], run
        )
        outputs = _wait_for_topic_log(settings, output, lambda r: r.key.decode(), run)
        first = _wait(lambda: outputs.records, run, timeout=600, what="the first output")
        first_output_s = first[0][2] - began
        print(f"   first output after {first_output_s:.1f} s", file=sys.stderr, flush=True)
        time.sleep(settle_s)
        usage = Usage(lambda: pipeline_pids(run.pid))
        window_start_ms = int(time.time() * 1000)
        while time.monotonic() - usage.began < seconds:
            usage.sample()
            _check_running(run)
            time.sleep(1)
        usage.sample()
        used = usage.result()
        window_end_ms = int(time.time() * 1000)
        time.sleep(5)  # the last scores' outputs
    finally:
        os.killpg(run.pid, signal.SIGINT)
        run.wait(timeout=180)
        for topic_log in (published, outputs):
            if topic_log is not None:
                topic_log.stop()
    left = services.leftovers()
    if left:
        raise RuntimeError(f"make run left processes behind: {left}")
    latencies = latencies_ms(published.records, outputs.records, window_start_ms, window_end_ms)
    if not latencies:
        raise RuntimeError(f"no score went through in the window; see {log}")
    return {
        "sim_speed": speed,
        **used,
        "scores": len(latencies),
        "publish_to_output_p50_ms": percentile(latencies, 50),
        "publish_to_output_p99_ms": percentile(latencies, 99),
        "publish_to_output_max_ms": latencies[-1],
        "first_output_s": round(first_output_s, 1),
    }


def _check_running(run: subprocess.Popen) -> None:
    if run.poll() is not None:
        raise RuntimeError(f"make run exited with {run.returncode}")


def _wait(found, run: subprocess.Popen, timeout: float, what: str):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if result := found():
            return result
        _check_running(run)
        time.sleep(0.1)
    raise RuntimeError(f"no {what} within {timeout:.0f} s")


def _wait_for_topic_log(settings, topic, key_of, run) -> TopicLog:
    """A TopicLog of `topic` once the broker and the topic exist (make run starts them)."""
    return _wait(
        lambda: TopicLog.open(settings, topic, key_of), run, timeout=300, what=f"topic {topic}"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--speed", type=float, default=5.0)
    parser.add_argument("--seconds", type=int, default=120)
    args = parser.parse_args()
    log = ROOT / "build" / "bench" / "logs" / "pipeline.log"
    log.parent.mkdir(parents=True, exist_ok=True)
    settle_s = BenchSettings().pipeline_settle_seconds
    print(json.dumps(run_pipeline(args.speed, args.seconds, log, settle_s), indent=2))


if __name__ == "__main__":
    main()
