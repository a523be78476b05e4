"""Kafka's own limit on the same broker: Kafka's tools from the jars `make install` brought."""

from __future__ import annotations

import re
import shutil
import subprocess
import sys

from bench.settings import ROOT
from bench.topics import Topics
from stedi.config import Settings

KAFKA_JARS = ROOT / "build" / "jars" / "kafka"
# Warnings only, to stderr: stdout stays the tools' figures.
LOG4J = ROOT / "stedi" / "stack" / "spark-log4j2.properties"


def kafka_tool(main_class: str, *args: str, timeout: float = 600) -> str:
    argv = [
        shutil.which("java") or "java",
        "-Xmx512m",
        f"-Dlog4j2.configurationFile=file:{LOG4J}",
        "-cp",
        f"{KAFKA_JARS}/*",
        main_class,
        *args,
    ]
    result = subprocess.run(argv, capture_output=True, text=True, timeout=timeout, cwd=ROOT)
    if result.returncode != 0:
        raise RuntimeError(f"{main_class} failed ({result.returncode}):\n{result.stderr[-3000:]}")
    return result.stdout


def parse_consumer_performance(stdout: str) -> dict:
    """The tool prints a CSV header line and one line of figures."""
    lines = [line for line in stdout.splitlines() if line.strip()]
    header = [h.strip() for h in lines[-2].split(",")]
    values = [v.strip() for v in lines[-1].split(",")]
    return dict(zip(header, values, strict=True))


def consumer_limit(settings: Settings, topic: str, records: int) -> dict:
    """org.apache.kafka.tools.ConsumerPerformance reading `records` records of `topic`.

    `fetch.nMsg.sec` leaves out the consumer group's join, as the join's figure
    leaves out the JVM start; `nMsg.sec` has it.
    """
    print(f">> Kafka's consumer limit: ConsumerPerformance on {topic}", file=sys.stderr, flush=True)
    stdout = kafka_tool(
        "org.apache.kafka.tools.ConsumerPerformance",
        "--bootstrap-server",
        settings.kafka_bootstrap_servers,
        "--topic",
        topic,
        "--messages",
        str(records),
        "--timeout",
        "60000",
    )
    figures = parse_consumer_performance(stdout)
    return {
        "consumer_records": int(figures["data.consumed.in.nMsg"]),
        "consumer_eps": round(float(figures["fetch.nMsg.sec"]), 1),
        "consumer_eps_with_group_join": round(float(figures["nMsg.sec"]), 1),
    }


def parse_end_to_end_latency(stdout: str) -> dict:
    match = re.search(r"Percentiles: 50th = (\d+), 99th = (\d+), 99\.9th = (\d+)", stdout)
    avg = re.search(r"Avg latency: ([\d.]+) ms", stdout)
    if match is None or avg is None:
        raise RuntimeError(f"EndToEndLatency printed no percentiles:\n{stdout[-2000:]}")
    return {
        "roundtrip_p50_ms": float(match[1]),
        "roundtrip_p99_ms": float(match[2]),
        "roundtrip_p999_ms": float(match[3]),
        "roundtrip_avg_ms": float(avg[1]),
    }


def roundtrip(settings: Settings, topics: Topics, messages: int, size: int = 100) -> dict:
    """org.apache.kafka.tools.EndToEndLatency: one record at a time, produced (acks=1) then
    consumed, on a topic of its own; whole milliseconds."""
    topic = f"bench-roundtrip-{topics.run_id}"
    topics.adopt(topic)  # the tool creates it
    print(
        f">> Kafka's round trip: EndToEndLatency, {messages:,} records", file=sys.stderr, flush=True
    )
    stdout = kafka_tool(
        "org.apache.kafka.tools.EndToEndLatency",
        settings.kafka_bootstrap_servers,
        topic,
        str(messages),
        "1",
        str(size),
    )
    return {**parse_end_to_end_latency(stdout), "roundtrip_messages": messages}
