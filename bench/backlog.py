"""Throughput: the same backlog through the project's join and through the peer, --available-now."""

from __future__ import annotations

import sys
import tempfile

from bench.progress import summarize
from bench.settings import ROOT, BenchSettings
from bench.spark_run import SparkRun
from bench.topics import record_count
from stedi.config import Settings


def run_backlog(
    label: str,
    argv: list[str],
    env: dict[str, str],
    output_topic: str,
    events_topic: str,
    customers: int,
    settings: Settings,
    bench: BenchSettings,
) -> dict:
    """Run one job over the backlog until it exits; its figures, start-up excluded.

    `seconds` is the sum of the micro-batch durations the job reports (see
    bench/progress.py), so the JVM's start and stop are not in it; `wall_s` has both.
    """
    print(f">> {label}: {' '.join(argv[-2:])} over the backlog", file=sys.stderr, flush=True)
    with tempfile.TemporaryDirectory(prefix="bench-checkpoints-") as checkpoints:
        run_env = {
            **env,
            "STEDI_CHECKPOINT_DIR": checkpoints,
            "STEDI_STARTING_OFFSETS": "earliest",
            "STEDI_SUBMIT": "local",
        }
        with SparkRun(label, argv, run_env, bench.log_dir / f"{label}.log") as run:
            code = run.wait(bench.timeout_s)
            if code != 0:
                raise RuntimeError(
                    f"{label} exited with {code}; log {run.log_path}:\n{run.log_tail()}"
                )
    figures = summarize(run.batches)
    if not run.batches:
        raise RuntimeError(f"{label} printed no progress lines; log {run.log_path}")
    events = record_count(settings, events_topic)
    seconds = figures["seconds"]
    result = {
        "events": events,
        "customers": customers,
        "input_rows": figures["input_rows"],
        "output_records": record_count(settings, output_topic),
        "seconds": round(seconds, 2),
        "throughput_eps": round(events / seconds, 1) if seconds else 0.0,
        "wall_s": round(run.elapsed, 1),
        "startup_and_exit_s": round(run.elapsed - seconds, 1),
        "batches": sum(q["batches"] for q in figures["queries"].values()),
        "queries": figures["queries"],
        "driver_peak_rss_mb": run.peak_rss_mb,
    }
    if figures["state_rows"] is not None:
        result["state_rows"] = figures["state_rows"]
    print(
        f"   {label}: {events:,} risk scores in {seconds:.1f} s of micro-batches "
        f"({result['throughput_eps']:,.0f}/s), {run.elapsed:.1f} s wall",
        file=sys.stderr,
        flush=True,
    )
    return result


def join_argv() -> list[str]:
    return [str(ROOT / "submit-join.sh"), "--available-now"]


def peer_argv() -> list[str]:
    return [str(ROOT / "bin" / "submit"), "bench/peer_join.py", "--available-now"]
