"""Property: any bytes into a decoder give a valid row or a dead letter, never an exception.

Runs against the join script's decoders (the console scripts' copies are the
same code, see test_scripts_standalone.py). Each example is a micro-batch of
values, so one Spark job checks many inputs.
"""

import base64
import json
import math
import re
from datetime import date, datetime

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.records import KAFKA_SOURCE_SCHEMA
from tests.scripts import join_job

T0 = datetime(2026, 1, 1)
EMAIL = r"^[^@\s]+@[^@\s]+\.[^@\s]+$"  # the decoders' rule
PROPERTY = settings(
    max_examples=12, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)

text_or_junk = st.one_of(st.text(max_size=20), st.integers(), st.none(), st.floats())
member_json = st.fixed_dictionaries(
    {},
    optional={
        "customerName": text_or_junk,
        "email": st.one_of(st.emails(), text_or_junk),
        "birthDay": st.one_of(st.dates().map(date.isoformat), text_or_junk),
    },
).map(json.dumps)
member = st.one_of(
    member_json.map(lambda m: base64.b64encode(m.encode()).decode()),
    st.binary(max_size=30).map(lambda b: base64.b64encode(b).decode()),
    st.text(max_size=10),
)
redis_value = st.one_of(
    st.binary(max_size=60),
    st.builds(
        lambda key, members: json.dumps(
            {
                "key": key,
                "existType": "NONE",
                "ch": False,
                "incr": False,
                "zSetEntries": [{"element": m, "score": 0} for m in members],
            }
        ).encode(),
        st.sampled_from(["Q3VzdG9tZXI=", "Q3VzdG9tZXI", "VXNlcg==", "***", ""]),
        st.lists(member, max_size=3),
    ),
)
risk_value = st.one_of(
    st.binary(max_size=60),
    st.fixed_dictionaries(
        {},
        optional={
            "customer": st.one_of(st.emails(), text_or_junk),
            "score": st.one_of(st.floats(allow_nan=True, allow_infinity=True), text_or_junk),
            "riskDate": st.one_of(st.datetimes().map(lambda d: d.isoformat() + "Z"), text_or_junk),
        },
    ).map(lambda d: json.dumps(d).encode()),
)


def frame(spark, topic, values):
    rows = [(None, v, topic, 0, i, T0) for i, v in enumerate(values)]
    return spark.createDataFrame(rows, KAFKA_SOURCE_SCHEMA)


@PROPERTY
@given(values=st.lists(redis_value, min_size=1, max_size=15))
def test_any_redis_server_record_gives_customers_dead_letters_or_nothing(spark, values):
    rows = join_job.customer_members(frame(spark, "redis-server", values)).collect()
    for row in rows:
        if row.problem is None:
            assert row.birthYear is not None and row.birthYear <= date.today().year
            assert row.email and re.match(EMAIL, row.email)
    by_offset = {}
    for row in rows:
        by_offset.setdefault(row.offset, []).append(row)
    for offset, value in enumerate(values):
        found = by_offset.get(offset, [])
        members = [r.member for r in found]
        assert len(members) == len(set(members))  # one row per member at most
        if not found:  # ignored: a well-formed record of another key, or a Customer SET
            record = json.loads(value)
            assert record["key"] not in ("Q3VzdG9tZXI=", "Q3VzdG9tZXI")


@PROPERTY
@given(values=st.lists(risk_value, min_size=1, max_size=15))
def test_any_stedi_events_record_gives_one_score_or_one_dead_letter(spark, values):
    rows = join_job.risk_events(frame(spark, "stedi-events", values)).collect()
    assert sorted(r.offset for r in rows) == list(range(len(values)))
    for row in rows:
        if row.problem is None:
            assert math.isfinite(row.score)
            assert row.riskDate is not None
            assert re.match(EMAIL, row.customer)
    events = join_job.risk_events(frame(spark, "stedi-events", values))
    letters = join_job.checked_dead_letters(events.select("*", *join_job.dead_letter()))
    assert letters.count() == sum(r.problem is not None for r in rows)
