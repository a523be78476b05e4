"""The caregiver's view of a customer, in-process (TestClient, fakeredis): every test with
ISO times and the score it got, the current risk, pages, ownership, restarts, and reads
bounded by the customer's own tests (counted in Redis commands, never timed)."""

import json
import re
import time

import fakeredis
import pytest

from stedi.app.history import PAGE_SIZE
from stedi.app.risk import StepTest, iso_millis, risk_record, risk_score, trend
from tests.app_in_process import app_in_process, redis_commands
from tests.app_server import a_customer, log_in, new_user

PASSWORD = "a long enough password"  # new_user's
# Durations of six tests, oldest first: slower, then faster again.
DURATIONS_MS = [100_000, 90_000, 95_000, 105_000, 60_000, 71_500]
OTHER_TESTS = 50_000


@pytest.fixture(scope="module")
def app():
    with app_in_process() as in_process:
        yield in_process


def a_customer_of(app, name="Hana History"):
    """A new user with one customer: (client, CSRF headers, customer email, user email)."""
    client, token, user = new_user(app)
    headers = {"X-CSRF-Token": token}
    customer = a_customer(name)
    assert client.post("/api/customers", json=customer, headers=headers).status_code == 201
    return client, headers, customer["email"], user


def stops_for(count: int) -> list[int]:
    """`count` stop times a minute apart, oldest first, the newest a minute ago."""
    newest = (int(time.time()) - 60) * 1000
    return [newest - (count - 1 - i) * 60_000 for i in range(count)]


def run_tests(client, headers, email, durations_ms) -> tuple[list, list[int]]:
    """Posts one test per duration, oldest first: (the scores the app answered, stops)."""
    scores, stops = [], stops_for(len(durations_ms))
    for stop, duration in zip(stops, durations_ms, strict=True):
        body = {"email": email, "startTime": stop - duration, "stopTime": stop, "totalSteps": 30}
        response = client.post("/api/tests", json=body, headers=headers)
        assert response.status_code == 201, response.text
        scores.append(response.json()["score"])
    return scores, stops


def test_each_test_has_iso_times_and_the_score_risk_py_gives_and_the_app_published(app):
    client, headers, email, _ = a_customer_of(app)
    answered, stops = run_tests(client, headers, email, DURATIONS_MS)
    steps = [StepTest(s, d) for s, d in zip(stops, DURATIONS_MS, strict=True)]
    expected = [risk_score(steps[: i + 1]) for i in range(len(steps))]
    assert answered == [None if r is None else r.score for r in expected]
    assert answered[3:] == [-5.0, 10.0, 34.25]  # (100+90)/2 - (95+105)/2, ... by hand

    view = client.get(f"/api/customers/{email}").json()
    newest_first = list(reversed(range(len(steps))))
    assert [t["stopTime"] for t in view["tests"]] == [iso_millis(stops[i]) for i in newest_first]
    assert [t["startTime"] for t in view["tests"]] == [
        iso_millis(stops[i] - DURATIONS_MS[i]) for i in newest_first
    ]
    assert [t["testTime"] for t in view["tests"]] == [DURATIONS_MS[i] for i in newest_first]
    assert [t["score"] for t in view["tests"]] == [answered[i] for i in newest_first]
    assert [t["riskDate"] for t in view["tests"]][:3] == [iso_millis(s) for s in stops[:2:-1]]
    assert [t["riskDate"] for t in view["tests"]][3:] == [None] * 3
    assert view["scores"] == [
        {"stopTime": iso_millis(stops[i]), "score": answered[i]} for i in (3, 4, 5)
    ]
    latest = risk_score(steps)
    assert view["latest"] == {
        "score": latest.score,
        "riskDate": iso_millis(stops[-1]),
        "trend": "improved",
    }
    assert (view["testCount"], view["page"], view["pages"]) == (6, 1, 1)

    # The lookup is the stedi-events record the app published for the last test.
    risk = client.get(f"/api/customers/{email}/risk")
    assert risk.status_code == 200 and risk.json() == risk_record(email, latest)
    published = [json.loads(value) for _, value in app.publisher.sent]
    mine = [p for p in published if p["customer"] == email]
    assert [p["score"] for p in mine] == answered[3:]
    assert mine[-1] == risk.json()

    page = client.get(f"/customers/{email}").text
    assert page.count("needs 4 tests") == 3
    stopped = re.findall(r'<td><time datetime="([^"]+)">', page)
    assert stopped == [iso_millis(stops[i]) for i in newest_first]
    assert not re.search(r"\b\d{13}\b", page)  # no epoch milliseconds anywhere
    points = re.search(r"data-points='([^']+)'", page).group(1)
    assert json.loads(points.replace("&#34;", '"')) == view["scores"]
    assert 'id="latest-trend" class="trend-improved">improved<' in page


def test_the_timer_page_lists_each_customers_last_test_and_latest_score(app):
    client, headers, tested, _ = a_customer_of(app, "Tia Tested")
    young = a_customer("Una Untested")
    assert client.post("/api/customers", json=young, headers=headers).status_code == 201
    three = a_customer("Tom Three")
    assert client.post("/api/customers", json=three, headers=headers).status_code == 201
    scores, stops = run_tests(client, headers, tested, DURATIONS_MS[:4])
    run_tests(client, headers, three["email"], DURATIONS_MS[:3])
    page = client.get("/timer").text
    rows = re.findall(r"<tr>(.*?)</tr>", page, re.S)
    by_name = {re.search(r">([^<]+)</a>", r).group(1): r for r in rows if "</a>" in r}
    last_stop = iso_millis(stops[-1])
    assert f'<time datetime="{last_stop}">' in by_name["Tia Tested"]
    assert f'{scores[-1]} <span class="trend-{trend(scores[-1])}">' in by_name["Tia Tested"]
    assert "never tested" in by_name["Una Untested"]
    assert "needs 4 tests" in by_name["Tom Three"] and "<time" in by_name["Tom Three"]


def test_another_users_customer_and_its_risk_are_404_and_no_score_is_404_too(app):
    owner, headers, email, _ = a_customer_of(app, "Olga Owned")
    run_tests(owner, headers, email, DURATIONS_MS[:3])
    none_yet = owner.get(f"/api/customers/{email}/risk")
    assert none_yet.status_code == 404 and "4th test" in none_yet.json()["error"]
    run_tests(owner, headers, email, DURATIONS_MS[3:4])
    assert owner.get(f"/api/customers/{email}/risk").status_code == 200

    other, _, _ = new_user(app)
    for path in (f"/api/customers/{email}", f"/api/customers/{email}/risk"):
        answer = other.get(path)
        assert answer.status_code == 404 and "No such customer" in answer.json()["error"]
    page = other.get(f"/customers/{email}")
    assert page.status_code == 404 and "Olga Owned" not in page.text
    assert "Olga Owned" not in other.get("/timer").text


@pytest.mark.parametrize("page", ["0", "-1", "abc", "1.5", "99999999", ""])
def test_a_page_that_is_not_a_whole_number_from_1_is_refused(app, page):
    client, _, email, _ = a_customer_of(app)
    assert client.get(f"/api/customers/{email}?page={page}").status_code == 400
    assert client.get(f"/customers/{email}?page={page}").status_code == 400


def answers(client, email) -> dict:
    """What the user sees of the customer: API pages, the risk lookup, pages as HTML."""
    seen = {path: client.get(path) for path in (
        f"/api/customers/{email}", f"/api/customers/{email}?page=2",
        f"/api/customers/{email}/risk", f"/customers/{email}", "/timer",
    )}  # fmt: skip
    assert all(r.status_code == 200 for r in seen.values()), seen
    # Pages carry the session's CSRF token; the rest is the data.
    csrf = re.compile(r'content="[^"]+"|name="csrf" value="[^"]+"')
    return {p: csrf.sub("", r.text) for p, r in seen.items()}


def test_the_same_answers_after_a_restart_and_after_the_index_is_lost():
    server = fakeredis.FakeServer()
    with app_in_process(server=server) as first:
        client, headers, email, user = a_customer_of(first)
        run_tests(client, headers, email, DURATIONS_MS * 10)  # 60 tests: two pages
        before = answers(client, email)
        tests = first.redis.zcard("RapidStepTest")
    assert json.loads(before[f"/api/customers/{email}"])["pages"] == 2
    assert len(json.loads(before[f"/api/customers/{email}?page=2"])["tests"]) == 10

    with app_in_process(server=server) as restarted:
        assert restarted.redis.zcard("RapidStepTest") == tests  # RapidStepTest as it was
        client, _ = log_in(restarted, user, PASSWORD)
        assert answers(client, email) == before
        # The index lost (a Redis from before it existed): the start builds it again.
        restarted.redis.delete(f"TestsOf:{email}", "LatestTest")
    with app_in_process(server=server) as rebuilt:
        client, _ = log_in(rebuilt, user, PASSWORD)
        assert answers(client, email) == before


def other_customers_tests(count: int, customers: int) -> tuple[dict, dict]:
    """`count` tests of `customers` other customers: RapidStepTest members, TestsOf rows."""
    members, rows = {}, {}
    stop0 = (int(time.time()) - 3 * 86400) * 1000
    for i in range(count):
        email = f"other.{i % customers}@test.com"
        customer = {"customerName": "Other", "email": email, "phone": "8015551212",
                    "birthDay": "1950-01-01"}  # fmt: skip
        stop = stop0 + i * 1000
        test = {"startTime": stop - 60_000, "stopTime": stop, "testTime": 60_000,
                "totalSteps": 30, "customer": customer}  # fmt: skip
        members[json.dumps(test)] = 0
        row = {**test, "score": None, "riskDate": None}
        del row["customer"]
        rows.setdefault(email, {})[f"{stop}:{stop - 60_000}"] = json.dumps(row)
    return members, rows


def test_200_tests_page_newest_first_and_reads_do_not_grow_with_50000_other_tests(app):
    client, headers, email, user = a_customer_of(app, "Paula Paged")
    run_tests(client, headers, email, [60_000 + i * 100 for i in range(200)])
    pages = [client.get(f"/api/customers/{email}?page={n}").json() for n in (1, 2, 3, 4, 5)]
    assert [len(p["tests"]) for p in pages] == [PAGE_SIZE] * 4 + [0]
    assert all(p["pages"] == 4 and p["testCount"] == 200 for p in pages)
    stops = [t["stopTime"] for p in pages for t in p["tests"]]
    assert stops == sorted(set(stops), reverse=True) and len(stops) == 200
    assert [t["stopTime"] for t in pages[0]["tests"]] == stops[:PAGE_SIZE]
    html = client.get(f"/customers/{email}?page=2").text
    assert 'href="?page=1"' in html and 'href="?page=3"' in html
    assert len(re.findall(r"<td><time datetime=", html)) == PAGE_SIZE
    assert len(pages[0]["scores"]) == 197  # the chart: every score, from the 4th test on

    def reads() -> list[tuple[str, str]]:
        with redis_commands() as seen:
            for path in (f"/api/customers/{email}?page=3", f"/customers/{email}",
                         f"/api/customers/{email}/risk", "/timer"):  # fmt: skip
                assert client.get(path).status_code == 200
        return seen

    alone = reads()
    members, rows = other_customers_tests(OTHER_TESTS, customers=250)
    app.redis.zadd("RapidStepTest", members)
    for other, fields in rows.items():
        app.redis.hset(f"TestsOf:{other}", mapping=fields)
        app.redis.hset("LatestTest", other, json.dumps({"stopTime": 0, "score": None}))
    assert app.redis.zcard("RapidStepTest") >= OTHER_TESTS + 200
    with_others = reads()
    assert with_others == alone  # the same commands on the same keys
    # Per request: the session, the customer's owner, then that customer's tests and only
    # them (one HVALS of its own index); the timer page reads the user's customers and
    # their LatestTest fields, and the user's simulation slot.
    session, own = alone[0][1], f"CustomersOf:{user}"
    assert session.startswith("Login:")
    customer_page = [("HGET", session), ("HGET", own), ("HVALS", f"TestsOf:{email}")]
    timer_page = [("HGET", session), ("HVALS", own), ("HMGET", "LatestTest")]
    timer_page.append(("HGET", "Simulations"))  # the switch: on in any app process?
    assert alone == customer_page * 3 + timer_page
