"""Throughput: a backlog through one Spark job with --available-now, start-up left out."""

from __future__ import annotations

import sys
import tempfile

from bench.progress import summarize
from bench.settings import ROOT, BenchSettings
from bench.spark_run import SparkRun
from bench.topics import record_count
from stedi.config import Settings


def run_to_end(
    label: str, argv: list[str], env: dict[str, str], bench: BenchSettings, empty: bool = False
) -> tuple[SparkRun, dict | None]:
    """Run one job over its backlog from the earliest offsets until it exits.

    Returns the run and its progress figures (bench/progress.py `summarize`);
    fails loudly when the job fails or prints no progress line (unless `empty`:
    a run on empty topics has no batch to report).
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
    if empty:
        return run, None
    if not run.batches:
        raise RuntimeError(f"{label} printed no progress lines; log {run.log_path}")
    return run, summarize(run.batches)


def timings(run: SparkRun, figures: dict) -> dict:
    """The figures every backlog run reports, whatever its unit of work.

    `seconds` is the sum of the micro-batch durations the job reports (see
    bench/progress.py), so the JVM's start and stop are not in it; `wall_s` has both.
    """
    seconds = figures["seconds"]
    return {
        "input_rows": figures["input_rows"],
        "seconds": round(seconds, 2),
        "wall_s": round(run.elapsed, 1),
        "startup_and_exit_s": round(run.elapsed - seconds, 1),
        "batches": sum(q["batches"] for q in figures["queries"].values()),
        "queries": figures["queries"],
        "driver_peak_rss_mb": run.peak_rss_mb,
    }


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
    """A join over the backlog of risk scores: its figures, start-up excluded."""
    run, figures = run_to_end(label, argv, env, bench)
    events = record_count(settings, events_topic)
    seconds = figures["seconds"]
    result = {
        "events": events,
        "customers": customers,
        "output_records": record_count(settings, output_topic),
        "throughput_eps": round(events / seconds, 1) if seconds else 0.0,
        **timings(run, figures),
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


def marginal_s(
    label: str, argv: list[str], empty_env: dict[str, str], backlog: dict, bench: BenchSettings
) -> float:
    """The backlog's cost beyond the job's fixed costs (JVM, session, planning, exit):
    its wall time on the backlog minus its wall time on empty topics (issue 22)."""
    run, _ = run_to_end(f"{label}-empty", argv, empty_env, bench, empty=True)
    marginal = round(backlog["wall_s"] - run.elapsed, 1)
    print(
        f"   {label}: {run.elapsed:.1f} s wall on empty topics: {marginal:.1f} s for the backlog",
        file=sys.stderr,
        flush=True,
    )
    return marginal


def join_argv() -> list[str]:
    return [str(ROOT / "submit-join.sh"), "--available-now"]


def peer_argv() -> list[str]:
    return [str(ROOT / "bin" / "submit"), "bench/peer_join.py", "--available-now"]
