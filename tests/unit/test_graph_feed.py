"""The graph's feed shows each assessment once (issue 22): pure, no Kafka.

A record of the output topic is (key, value, headers) as kafka-python reads it: the
key is the email, the `riskDate` header names the assessment. A join restart
rewrites its last micro-batch, so the same records come again, in the same poll as
their first copy or in a later one.
"""

import asyncio
import json
from types import SimpleNamespace

from stedi.app.kafka_io import SHOWN_LIMIT, RiskFeed, ShownAssessments, new_points


def record(email: str, score: float, risk_date: str | None, birth_year: int = 1963):
    value = {"customer": email, "score": score, "email": email, "birthYear": birth_year}
    headers = [] if risk_date is None else [("riskDate", risk_date.encode("utf-8"))]
    return email.encode(), json.dumps(value, separators=(",", ":")).encode(), headers


ANN_1 = record("ann@test.com", 1.5, "2020-09-14T07:54:06.417Z")
ANN_2 = record("ann@test.com", -2.0, "2020-09-14T08:00:00.000Z")
BOB_1 = record("bob@test.com", 3.0, "2020-09-14T07:54:06.417Z", birth_year=1950)


def point(birth_year: int, score: float) -> dict:
    return {"birthYear": birth_year, "score": score}


def test_a_repeat_within_one_poll_is_one_point():
    shown = ShownAssessments()
    assert new_points([ANN_1, BOB_1, ANN_1, ANN_2, BOB_1], shown) == [
        point(1963, 1.5),
        point(1950, 3.0),
        point(1963, -2.0),
    ]
    assert len(shown) == 3


def test_a_rewritten_batch_in_a_later_poll_adds_no_point():
    shown = ShownAssessments()
    assert new_points([ANN_1, BOB_1], shown) == [point(1963, 1.5), point(1950, 3.0)]
    # The restarted join writes its last batch again, then goes on with new scores.
    assert new_points([BOB_1], shown) == []
    assert new_points([ANN_1, BOB_1, ANN_2], shown) == [point(1963, -2.0)]


def test_another_customer_risk_date_or_score_is_another_assessment():
    shown = ShownAssessments()
    same_date_other_customer = record("bob@test.com", 1.5, "2020-09-14T07:54:06.417Z")
    same_customer_other_date = record("ann@test.com", 1.5, "2020-09-15T07:54:06.417Z")
    # A late test rescored with the newest test's riskDate: the score is new, so is the point.
    same_date_other_score = record("ann@test.com", 0.5, "2020-09-14T07:54:06.417Z")
    records = [ANN_1, same_date_other_customer, same_customer_other_date, same_date_other_score]
    assert len(new_points(records, shown)) == 4


def test_records_without_the_header_are_plotted_every_time_and_not_remembered():
    shown = ShownAssessments()
    older_join = record("ann@test.com", 1.5, None)
    assert new_points([older_join, older_join], shown) == [point(1963, 1.5)] * 2
    assert new_points([older_join], shown) == [point(1963, 1.5)]
    assert len(shown) == 0


def test_records_that_are_no_point_are_skipped_and_not_remembered():
    shown = ShownAssessments()
    header = [("riskDate", b"2020-09-14T07:54:06.417Z")]
    broken = [(b"a@test.com", b"{{", header), (b"a@test.com", None, header)]
    no_year = (b"a@test.com", b'{"score":1.0}', header)
    assert new_points([*broken, no_year], shown) == []
    assert len(shown) == 0


def test_memory_holds_the_last_limit_assessments_and_forgets_the_oldest_first():
    shown = ShownAssessments(limit=2)
    assert len(new_points([ANN_1, ANN_2, BOB_1], shown)) == 3
    assert len(shown) == 2
    assert new_points([ANN_2, BOB_1], shown) == []  # the last two are remembered
    assert new_points([ANN_1], shown) == [point(1963, 1.5)]  # the oldest was forgotten
    assert len(shown) == 2


def test_the_feed_never_remembers_more_than_shown_limit_assessments():
    shown = ShownAssessments()
    records = (
        record(f"c{i}@test.com", 1.0, "2020-09-14T07:54:06.417Z") for i in range(SHOWN_LIMIT + 500)
    )
    assert len(new_points(records, shown)) == SHOWN_LIMIT + 500
    assert len(shown) == SHOWN_LIMIT
    assert RiskFeed("unused:9092", "unused").shown.limit == SHOWN_LIMIT


def test_the_feed_sends_a_browser_each_assessment_once_across_polls():
    """RiskFeed's reader callback, with records shaped like kafka-python's."""

    def polled(*triples):
        return [SimpleNamespace(key=k, value=v, headers=h) for k, v, h in triples]

    async def scenario():
        feed = RiskFeed("unused:9092", "unused")
        feed.loop = asyncio.get_running_loop()
        stream = feed.subscribe("session")
        feed._received(polled(ANN_1, ANN_1, BOB_1))
        feed._received(polled(BOB_1, ANN_2))  # BOB_1 again: a rewritten batch
        await asyncio.sleep(0)  # the points are handed to the event loop
        received = [await stream.next(1) for _ in range(stream.queue.qsize())]
        assert received == [point(1963, 1.5), point(1950, 3.0), point(1963, -2.0)]
        assert feed.points == received

    asyncio.run(scenario())
