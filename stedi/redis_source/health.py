"""Is the Redis source healthy? A health file it rewrites every second, and its readers.

The source writes `<state file without .json>.health.json` next to its state
file once a second: a heartbeat time, its verdict and the reason. It is ready
when all of these hold:
- Redis: the replication stream is established (PSYNC done, snapshot published);
- Kafka: a metadata request answered within the last KAFKA_PROBE_MAX_AGE seconds,
  and the last delivery was confirmed (not failed);
- its loop made progress within the stall limit (a wedged loop is not healthy).

Readers:
- `check(state_path, max_age_s)` -> (ok, reason); `ready(...)` -> bool.
  A missing file or a heartbeat older than `max_age_s` means the source is not
  running or hangs.
- `python -m stedi.redis_source.health [--state PATH] [--max-age S]` prints the
  reason and exits 0 when healthy, 1 otherwise (the compose healthcheck).
  PATH defaults to STEDI_REDIS_SOURCE_STATE.
"""

from __future__ import annotations

import argparse
import enum
import json
import logging
import os
import sys
import threading
import time
from pathlib import Path

log = logging.getLogger("stedi.redis_source")

KAFKA_PROBE_EVERY = 5.0  # seconds between metadata requests to Kafka
KAFKA_PROBE_MAX_AGE = 15.0  # a probe older than this does not count as "connected"


def health_path(state_path: str) -> str:
    """The health file next to the state file: redis-source.json -> redis-source.health.json."""
    base = state_path[: -len(".json")] if state_path.endswith(".json") else state_path
    return f"{base}.health.json"


class LinkState(enum.Enum):
    """Where the source's link to Redis is; the health file shows the value."""

    CONNECTING = "connecting"  # reading where to resume, asking Redis to continue
    SYNCING = "syncing"  # a full resync: publishing a snapshot of Redis
    STREAMING = "streaming"  # publishing the replication stream
    RETRYING = "retrying"  # the last connection failed: waiting to start over


class Status:
    """What the source's loop knows about its links; read by the heartbeat thread.

    Plain attributes set from one thread and read from another: each is a single
    reference assignment, so a reader sees either the old or the new value.
    """

    def __init__(self, stall_limit: float):
        self.stall_limit = stall_limit
        self.redis = LinkState.CONNECTING
        self.last_error = ""  # why the last connection ended (Kafka or Redis)
        self.delivery_error = ""  # set while Kafka fails to confirm records
        self.kafka_probe_ok_at = 0.0  # monotonic time of the last answered probe
        self.kafka_probe_error = "no answer yet"
        self.progress_at = time.monotonic()  # the loop's last sign of life
        self.position = ""
        self.published = 0
        self.dead_letters = 0

    def progress(self) -> None:
        self.progress_at = time.monotonic()

    def verdict(self, now: float | None = None) -> tuple[bool, str]:
        now = time.monotonic() if now is None else now
        if self.redis is LinkState.SYNCING:
            return False, "Redis: full resync in progress (publishing a snapshot)"
        if self.redis is not LinkState.STREAMING:
            detail = f"; last error: {self.last_error}" if self.last_error else ""
            return False, f"replication stream not established ({self.redis.value}){detail}"
        if self.delivery_error:
            return False, f"Kafka: records not confirmed ({self.delivery_error})"
        if now - self.kafka_probe_ok_at > KAFKA_PROBE_MAX_AGE:
            return False, f"Kafka: no metadata answer ({self.kafka_probe_error})"
        stalled = now - self.progress_at
        if stalled > self.stall_limit:
            return False, f"stalled: the source's loop made no progress for {stalled:.0f} s"
        return True, f"streaming {self.position}; Kafka connected"


class Heartbeat:
    """Two daemon threads: one probes Kafka's metadata, one writes the health file each second.

    Apart, so that a probe stuck on a hung broker cannot stop the heartbeat: the
    probe's answer just grows old, which the verdict reports.
    """

    def __init__(self, status: Status, state_path: str, probe, stop: threading.Event):
        self.status, self.path, self.probe, self.stop = status, health_path(state_path), probe, stop
        self.thread = threading.Thread(target=self._beat, name="health", daemon=True)
        self.prober = threading.Thread(target=self._probe, name="kafka-probe", daemon=True)

    def start(self) -> None:
        Path(self.path).unlink(missing_ok=True)  # never let a previous run's file speak for us
        self.prober.start()
        self.thread.start()

    def _probe(self) -> None:
        while not self.stop.is_set():
            try:
                self.probe()
                self.status.kafka_probe_ok_at = time.monotonic()
                self.status.kafka_probe_error = ""
            except Exception as exc:  # any failure to answer means "not connected"
                self.status.kafka_probe_error = str(exc) or type(exc).__name__
            self.stop.wait(KAFKA_PROBE_EVERY)

    def _beat(self) -> None:
        while not self.stop.is_set():
            self.write()
            self.stop.wait(1.0)
        self.write(stopped=True)

    def write(self, stopped: bool = False) -> None:
        ok, reason = self.status.verdict()
        if stopped:
            ok, reason = False, "stopped"
        record = {
            "pid": os.getpid(),
            "heartbeat": time.time(),
            "ready": ok,
            "reason": reason,
            "redis": self.status.redis.value,
            "position": self.status.position,
            "published": self.status.published,
            "deadLetters": self.status.dead_letters,
        }
        tmp = f"{self.path}.tmp"
        try:
            with open(tmp, "w") as f:
                json.dump(record, f)
            os.replace(tmp, self.path)  # readers never see half a file
        except OSError as exc:
            log.warning("cannot write the health file %s: %s", self.path, exc)


def check(state_path: str, max_age_s: float = 10.0) -> tuple[bool, str]:
    """(healthy, reason) of the source whose state file is `state_path`."""
    path = health_path(state_path)
    try:
        with open(path) as f:
            record = json.load(f)
    except FileNotFoundError:
        return False, f"no health file {path}: the Redis source is not running"
    except (OSError, ValueError) as exc:
        return False, f"unreadable health file {path}: {exc}"
    age = time.time() - float(record.get("heartbeat", 0))
    if age > max_age_s:
        return False, f"no heartbeat for {age:.0f} s: the Redis source is not running or hangs"
    return bool(record.get("ready")), str(record.get("reason", ""))


def ready(state_path: str, max_age_s: float = 10.0) -> bool:
    """True when the source is connected to Redis (streaming) and to Kafka, and alive."""
    return check(state_path, max_age_s)[0]


def main(argv: list[str] | None = None) -> int:
    from stedi.config import Settings

    parser = argparse.ArgumentParser(description="Exit 0 when the Redis source is healthy.")
    parser.add_argument("--state", help="the source's state file (STEDI_REDIS_SOURCE_STATE)")
    parser.add_argument("--max-age", type=float, default=10.0, help="heartbeat age limit, s")
    args = parser.parse_args(argv)
    ok, reason = check(args.state or Settings().redis_source_state, args.max_age)
    print(f"{'healthy' if ok else 'unhealthy'}: {reason}")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
