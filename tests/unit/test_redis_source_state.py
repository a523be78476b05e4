"""The source's state file: durable replace, round trip, and unreadable files ignored."""

import json

from stedi.redis_source.state import Position, load_state, save_state


def test_the_state_file_round_trips_and_replaces_the_old_one_without_leftovers(tmp_path):
    path = str(tmp_path / "deep" / "state.json")
    save_state(path, Position("r1", 10))
    save_state(path, Position("r1", 20, exact=True))
    assert load_state(path) == Position("r1", 20, exact=True)
    assert json.loads(open(path).read()) == {"replid": "r1", "offset": 20, "exact": True}
    assert sorted(p.name for p in (tmp_path / "deep").iterdir()) == ["state.json"]


def test_a_missing_or_unreadable_state_file_means_no_position(tmp_path):
    assert load_state(str(tmp_path / "none.json")) is None
    torn = tmp_path / "torn.json"
    torn.write_text('{"replid": "r1", "off')
    assert load_state(str(torn)) is None
