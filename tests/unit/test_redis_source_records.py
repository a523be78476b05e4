"""The Redis source's pure parts: command -> record, and where to resume."""

import base64
import json

from stedi.redis_source.records import (
    DEAD_LETTER_KEY_BYTES,
    MAX_DOUBLE,
    command_record,
    too_large_record,
)
from stedi.redis_source.state import Position, resume_position


def value(argv):
    return json.loads(command_record([a.encode() for a in argv])[1])


def test_zadd_options_map_to_exist_type_ch_and_incr():
    record = value(["zadd", "k", "XX", "CH", "INCR", "1.5", "m"])
    assert (record["existType"], record["ch"], record["incr"]) == ("XX", True, True)
    assert record["zSetEntries"] == [{"element": "bQ==", "score": 1.5}]


def test_infinite_scores_stay_valid_json():
    record = value(["ZADD", "k", "+inf", "a", "-inf", "b"])
    assert [e["score"] for e in record["zSetEntries"]] == [MAX_DOUBLE, -MAX_DOUBLE]


def test_set_expiries_map_to_seconds_or_milliseconds():
    assert value(["SET", "k", "v", "EX", "10"])["expiredType"] == "SECOND"
    assert value(["SET", "k", "v", "PXAT", "1700000000000"])["expiredValue"] == 1700000000000
    assert value(["SETEX", "k", "10", "v"])["expiredType"] == "SECOND"
    assert value(["PSETEX", "k", "10", "v"])["expiredType"] == "MS"
    assert value(["SET", "k", "v", "NX"])["existType"] == "NX"


def test_other_commands_and_malformed_ones_publish_nothing():
    for argv in (["DEL", "k"], ["PING"], ["ZADD", "k", "1"], ["ZADD", "k", "x", "m"], []):
        assert command_record([a.encode() for a in argv]) is None


def test_resume_prefers_the_file_when_it_is_ahead_in_the_same_stream():
    kafka, file = Position("r1", 100), Position("r1", 150)
    assert resume_position(kafka, file) == file


def test_resume_trusts_kafka_when_the_file_lags_or_is_from_another_stream():
    assert resume_position(Position("r1", 100), Position("r1", 50)) == Position("r1", 100)
    assert resume_position(Position("r2", 100), Position("r1", 500)) == Position("r2", 100)
    assert resume_position(Position("r1", 100), None) == Position("r1", 100)


def test_an_empty_topic_or_an_unfinished_snapshot_means_a_full_resync():
    assert resume_position(None, Position("r1", 100)) is None
    assert resume_position(Position("r1", 100, snapshot=True), None) is None
    finished = Position("r1", 100)
    assert resume_position(Position("r1", 100, snapshot=True), finished) == finished


def test_a_failed_delivery_makes_the_file_win_even_when_kafka_is_ahead():
    exact = Position("r1", 100, exact=True)
    assert resume_position(Position("r1", 180), exact) == exact
    assert resume_position(None, exact) is None, "an empty topic still means a full resync"


def test_a_too_large_write_becomes_a_small_dead_letter_with_its_stream_position():
    key = b"K" * 5000
    kafka_key, raw = too_large_record(
        key, "ZADD", 5_600_000, "redis-server", "r1", 42, False, "too large"
    )
    letter = json.loads(raw)
    assert len(raw) < 2048 and kafka_key == key[:DEAD_LETTER_KEY_BYTES]
    assert base64.b64decode(letter["key"]) == key[:DEAD_LETTER_KEY_BYTES]
    assert letter["keySize"] == 5000
    assert (letter["command"], letter["size"], letter["topic"]) == (
        "ZADD",
        5_600_000,
        "redis-server",
    )
    assert (letter["replid"], letter["offset"], letter["snapshot"]) == ("r1", 42, False)
    assert letter["reason"] == "too large"
