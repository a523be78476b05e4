"""Redis write commands as the records of topic `redis-server` (docs/formats.md).

The original connector serialised Java command objects with Jackson; the field
names, their order and the base64 encoding of keys and members are kept byte for
byte. ZADD and SET (and SETEX/PSETEX, published as SET) become records; every
other command returns None and is skipped.
"""

from __future__ import annotations

import base64
import json
import math
from typing import NamedTuple

MAX_DOUBLE = 1.7976931348623157e308


class KafkaRecord(NamedTuple):
    key: bytes  # the Redis key's raw bytes: one key's writes stay in order
    value: bytes  # the record's JSON


def _b64(raw: bytes) -> str:
    return base64.b64encode(raw).decode("ascii")


def _dumps(obj: dict) -> bytes:
    return json.dumps(obj, separators=(",", ":"), ensure_ascii=False).encode("utf-8")


def _score(raw: bytes) -> float:
    """A ZADD score; +/-inf (valid in Redis, not in JSON) is clamped to +/-MAX_DOUBLE."""
    value = float(raw)
    if math.isinf(value):
        return math.copysign(MAX_DOUBLE, value)
    return value


def zadd_value(
    key: bytes, members: list[tuple[bytes, float]], exist_type="NONE", ch=False, incr=False
) -> bytes:
    entries = [{"element": _b64(m), "score": s} for m, s in members]
    return _dumps(
        {
            "key": _b64(key),
            "existType": exist_type,
            "ch": ch,
            "incr": incr,
            "zSetEntries": entries,
            "zsetEntries": entries,
        }
    )


def set_value(
    key: bytes, value: bytes, expired_type="NONE", expired_value=None, exist_type="NONE"
) -> bytes:
    return _dumps(
        {
            "key": _b64(key),
            "value": _b64(value),
            "expiredType": expired_type,
            "expiredValue": expired_value,
            "existType": exist_type,
        }
    )


def _zadd(argv: list[bytes]) -> KafkaRecord | None:
    key, rest = argv[1], argv[2:]
    exist_type, ch, incr = "NONE", False, False
    while rest and rest[0].upper() in (b"NX", b"XX", b"GT", b"LT", b"CH", b"INCR"):
        flag = rest.pop(0).upper()
        if flag in (b"NX", b"XX"):
            exist_type = flag.decode()
        ch = ch or flag == b"CH"
        incr = incr or flag == b"INCR"
    if not rest or len(rest) % 2:
        return None
    members = [(rest[i + 1], _score(rest[i])) for i in range(0, len(rest), 2)]
    return KafkaRecord(key, zadd_value(key, members, exist_type, ch, incr))


def _set(argv: list[bytes]) -> KafkaRecord | None:
    key, value, options = argv[1], argv[2], [a.upper() for a in argv[3:]]
    exist_type, expired_type, expired_value = "NONE", "NONE", None
    i = 0
    while i < len(options):
        option = options[i]
        if option in (b"NX", b"XX"):
            exist_type = option.decode()
        elif option in (b"EX", b"PX", b"EXAT", b"PXAT") and i + 1 < len(options):
            # Redis 7 propagates relative expiries as absolute PXAT: the value is then
            # the absolute unix time, in the unit that expiredType names.
            expired_type = "SECOND" if option in (b"EX", b"EXAT") else "MS"
            expired_value = int(options[i + 1])
            i += 1
        i += 1
    return KafkaRecord(key, set_value(key, value, expired_type, expired_value, exist_type))


def _setex(argv: list[bytes], unit: str) -> KafkaRecord | None:
    key, ttl, value = argv[1], argv[2], argv[3]
    return KafkaRecord(key, set_value(key, value, unit, int(ttl)))


def command_record(argv: list[bytes]) -> KafkaRecord | None:
    """The Kafka record of a write command, or None when it is not published.

    The Kafka key is the Redis key's raw bytes, so one key's writes stay in order.
    """
    if not argv:
        return None
    name = argv[0].upper()
    try:
        if name == b"ZADD" and len(argv) >= 4:
            return _zadd(argv)
        if name == b"SET" and len(argv) >= 3:
            return _set(argv)
        if name == b"SETEX" and len(argv) == 4:
            return _setex(argv, "SECOND")
        if name == b"PSETEX" and len(argv) == 4:
            return _setex(argv, "MS")
    except ValueError:
        return None  # a score or expiry that is not a number: Redis itself refused it
    return None


DEAD_LETTER_KEY_BYTES = 1024  # a dead letter carries at most this much of the Redis key


def too_large_record(
    key: bytes,
    command: str,
    size: int,
    topic: str,
    replid: str,
    offset: int,
    snapshot: bool,
    reason: str,
) -> KafkaRecord:
    """The dead letter for a write whose record Kafka refused as too large.

    Small by construction: the Redis key (cut to DEAD_LETTER_KEY_BYTES, with its full
    length), the command, the refused record's size and where it was in the stream.
    """
    cut = key[:DEAD_LETTER_KEY_BYTES]
    value = _dumps(
        {
            "source": "redis-source",
            "topic": topic,
            "key": _b64(cut),
            "keySize": len(key),
            "command": command,
            "size": size,
            "replid": replid,
            "offset": offset,
            "snapshot": snapshot,
            "reason": reason[:500],
        }
    )
    return KafkaRecord(cut, value)
