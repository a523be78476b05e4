"""Each entry script, run through its wrapper with --available-now against real topics."""

import json
import os
import re
import subprocess

import pytest

from stedi.stack import services
from tests.records import SAM_TEST, customer, customer_record, risk_record, set_record, zadd_record
from tests.stack_support import create_topics, produce, read_all

pytestmark = pytest.mark.integration

SANTOSH = customer("Santosh Fibonnaci", "Santosh.Fibonnaci@test.com", "1963-01-01")


@pytest.fixture
def topics(stack, unique, tmp_path):
    """Unique topics and checkpoints for one test, as the jobs' environment."""
    env = {
        "STEDI_REDIS_TOPIC": f"redis-server-{unique}",
        "STEDI_EVENTS_TOPIC": f"stedi-events-{unique}",
        "KAFKA_RISK_TOPIC": f"customer-risk-{unique}",
        "STEDI_DEAD_LETTER_TOPIC": f"dead-letter-{unique}",
        "STEDI_CHECKPOINT_DIR": str(tmp_path / "checkpoints"),
    }
    create_topics(stack, *(v for k, v in env.items() if k != "STEDI_CHECKPOINT_DIR"))
    return env


def submit(wrapper: str, env: dict) -> str:
    result = subprocess.run(
        [str(services.ROOT / wrapper), "--available-now"],
        capture_output=True,
        text=True,
        timeout=300,
        env={**os.environ, **env, "STEDI_SUBMIT": "local"},
    )
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    return result.stdout


def console_rows(output: str) -> list[list[str]]:
    """The data rows of the console sink's tables (rows holding an email), sorted."""
    rows = [line for line in output.splitlines() if line.startswith("|") and "@" in line]
    return sorted([cell.strip() for cell in row.strip("|").split("|")] for row in rows)


def test_redis_job_prints_customers_and_ignores_other_keys(stack, topics):
    produce(
        stack,
        topics["STEDI_REDIS_TOPIC"],
        [
            customer_record(SAM_TEST),
            zadd_record("User", json.dumps({"email": "u@test.com", "birthDate": "1970-01-01"})),
            set_record("token", "abc"),
            "not json",
            customer_record(SANTOSH, padded=False),
        ],
    )
    assert console_rows(submit("submit-redis.sh", topics)) == [
        ["Santosh.Fibonnaci@test.com", "Santosh Fibonnaci", "1963"],
        ["sam.test@test.com", "Sam Test", "2001"],
    ]


def test_events_job_prints_customer_score_and_risk_date(stack, topics):
    produce(
        stack,
        topics["STEDI_EVENTS_TOPIC"],
        [risk_record("a@test.com", 7), "{{", risk_record("b@test.com", -1.25)],
        key=b"1600070046417",
    )
    assert console_rows(submit("submit-event.sh", topics)) == [
        ["a@test.com", "7.0", "2020-09-14 07:54:06.417"],
        ["b@test.com", "-1.25", "2020-09-14 07:54:06.417"],
    ]


def test_join_job_writes_the_spec_records_and_dead_letters(stack, topics):
    produce(
        stack,
        topics["STEDI_REDIS_TOPIC"],
        [customer_record(SANTOSH), customer_record(SANTOSH), customer_record(SAM_TEST), "junk"],
    )
    produce(
        stack,
        topics["STEDI_EVENTS_TOPIC"],
        [risk_record(SANTOSH["email"], 28.5), risk_record("nobody@test.com", 1.0), "{{"],
    )
    output = submit("submit-join.sh", topics)
    assert re.search(
        r"\[customer-risk-join\] batch 0: 7 rows in, [\d.]+ rows/s, \d+ ms, \d+ state rows", output
    )

    [record] = read_all(stack, topics["KAFKA_RISK_TOPIC"], 1)
    assert record.key == b"Santosh.Fibonnaci@test.com"
    assert record.value == (
        b'{"customer":"Santosh.Fibonnaci@test.com","score":28.5,'
        b'"email":"Santosh.Fibonnaci@test.com","birthYear":1963}'
    )
    letters = read_all(stack, topics["STEDI_DEAD_LETTER_TOPIC"], 2)
    assert sorted(json.loads(r.value)["problem"] for r in letters) == [
        "value is not a JSON object",
        "value is not a Redis source record",
    ]
    # A second run resumes from the checkpoint: nothing is written again.
    submit("submit-join.sh", topics)
    assert len(read_all(stack, topics["KAFKA_RISK_TOPIC"], 2, timeout=5)) == 1
