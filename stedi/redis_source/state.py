"""How far the Redis source got: its state file, and where to resume (pure apart from the file).

The state file holds the replication position up to which Kafka has confirmed
every record (and Redis has been acknowledged). It is written durably: a
temporary file, fsync, rename over the old one, fsync of the directory, so a
crash or power cut leaves either the old or the new position, never a torn one.
"""

from __future__ import annotations

import json
import logging
import os
from dataclasses import dataclass

log = logging.getLogger("stedi.redis_source")


@dataclass(frozen=True)
class Position:
    """A point of a Redis replication stream: everything up to `offset` is published."""

    replid: str
    offset: int
    # A snapshot record: the snapshot it belongs to may not have finished.
    snapshot: bool = False
    # Kafka failed to confirm records after this point: some of them may be in the
    # topic, some not, so resume exactly here even when the topic holds newer records.
    exact: bool = False


def load_state(path: str) -> Position | None:
    try:
        with open(path) as f:
            data = json.load(f)
        return Position(data["replid"], int(data["offset"]), exact=bool(data.get("exact")))
    except FileNotFoundError:
        return None
    except (ValueError, KeyError, TypeError) as exc:
        log.warning("ignoring unreadable state file %s: %s", path, exc)
        return None


def write_durably(path: str, data: bytes) -> None:
    """Replace `path` with `data` atomically and durably (fsync file, rename, fsync directory)."""
    directory = os.path.dirname(os.path.abspath(path))
    os.makedirs(directory, exist_ok=True)
    tmp = f"{path}.tmp"
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
    try:
        os.write(fd, data)
        os.fsync(fd)
    finally:
        os.close(fd)
    os.replace(tmp, path)
    dir_fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(dir_fd)  # makes the rename itself durable
    finally:
        os.close(dir_fd)


def save_state(path: str, position: Position) -> None:
    """Record that everything up to `position` is confirmed by Kafka (and acknowledged)."""
    data = {"replid": position.replid, "offset": position.offset}
    if position.exact:
        data["exact"] = True
    write_durably(path, json.dumps(data).encode())


def resume_position(in_kafka: Position | None, in_file: Position | None) -> Position | None:
    """Where to PSYNC from; None means a full resync.

    Kafka is the truth of what was published (the file may lag by one batch after
    a crash); the file also remembers commands that published nothing (PING,
    other commands), that a snapshot finished, and that Kafka failed to confirm
    records after it (then the file wins: what follows it in the topic may have gaps).
    """
    if in_kafka is None:
        return None  # empty topic: (re)publish everything
    if in_file is not None and in_file.exact:
        return in_file
    same_stream = in_file is not None and in_file.replid == in_kafka.replid
    if same_stream and in_file.offset >= in_kafka.offset:
        return in_file
    if in_kafka.snapshot:
        return None  # a snapshot that did not finish
    return in_kafka
