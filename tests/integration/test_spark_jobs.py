"""Each entry script, run through its wrapper (or alone) with --available-now on real topics;
the join's restarts and rebuilds as its query in this process (no JVM of its own)."""

import json
import os
import re
import shutil
import subprocess
import time
import uuid

import pytest
from kafka import KafkaProducer

from stedi.stack import services
from tests.records import SAM_TEST, customer, customer_record, risk_record, set_record, zadd_record
from tests.scripts import join_job
from tests.stack_support import (
    console_rows,
    job_topics,
    produce,
    read_all,
    submit_side_by_side,
)

pytestmark = pytest.mark.integration

SANTOSH = customer("Santosh Fibonnaci", "Santosh.Fibonnaci@test.com", "1963-01-01")
DAY_MS = 24 * 3600 * 1000


def produce_at(stack, topic: str, values_and_times: list[tuple[str, int]]) -> None:
    """Records whose Kafka timestamps (ms) the producer sets, as a replay or old data has."""
    producer = KafkaProducer(bootstrap_servers=stack.kafka_bootstrap_servers)
    for value, timestamp_ms in values_and_times:
        producer.send(topic, value=value.encode(), timestamp_ms=timestamp_ms)
    producer.flush()
    producer.close()


def joined(stack, topic: str, expected: int, timeout: float = 30.0) -> list[tuple[str, float]]:
    records = read_all(stack, topic, expected, timeout)
    return sorted((json.loads(r.value)["email"], json.loads(r.value)["score"]) for r in records)


def redis_inputs(stack, topics) -> None:
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


def events_inputs(stack, topics) -> None:
    produce(
        stack,
        topics["STEDI_EVENTS_TOPIC"],
        [risk_record("a@test.com", 7), "{{", risk_record("b@test.com", -1.25)],
        key=b"1600070046417",
    )


def join_inputs(stack, topics) -> None:
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


INPUTS = {
    "submit-redis.sh": redis_inputs,
    "submit-event.sh": events_inputs,
    "submit-join.sh": join_inputs,
}


@pytest.fixture(scope="module")
def wrapper_runs(stack, tmp_path_factory):
    """The three wrappers, each on its own topics with its inputs, run side by side:
    wrapper -> (its topics, its stdout)."""
    envs = {}
    for wrapper, produce_inputs in INPUTS.items():
        folder = tmp_path_factory.mktemp(wrapper.removesuffix(".sh"))
        envs[wrapper] = job_topics(stack, uuid.uuid4().hex[:10], folder)
        produce_inputs(stack, envs[wrapper])
    outputs = submit_side_by_side(envs)
    return {wrapper: (envs[wrapper], outputs[wrapper]) for wrapper in envs}


@pytest.mark.slow  # spark-submit
def test_redis_job_prints_customers_ignores_other_keys_and_counts_bad_records(wrapper_runs):
    _, output = wrapper_runs["submit-redis.sh"]
    assert console_rows(output) == [
        ["Santosh.Fibonnaci@test.com", "Santosh Fibonnaci", "1963"],
        ["sam.test@test.com", "Sam Test", "2001"],
    ]
    assert re.search(r"\[redis-customers-console\] batch 0: 5 rows in, .*, 1 bad records", output)


@pytest.mark.slow  # spark-submit
def test_events_job_prints_customer_score_and_risk_date(wrapper_runs):
    _, output = wrapper_runs["submit-event.sh"]
    assert console_rows(output) == [
        ["a@test.com", "7.0", "2020-09-14 07:54:06.417"],
        ["b@test.com", "-1.25", "2020-09-14 07:54:06.417"],
    ]
    assert re.search(r"\[risk-events-console\] batch 0: 3 rows in, .*, 1 bad records", output)


@pytest.mark.slow  # spark-submit
def test_join_job_writes_the_spec_records_and_dead_letters(stack, wrapper_runs):
    topics, output = wrapper_runs["submit-join.sh"]
    assert re.search(
        r"\[customer-risk-join\] batch 0: 7 rows in, [\d.]+ rows/s, \d+ ms, \d+ state rows, "
        r"2 dead letters",
        output,
    )

    [record] = read_all(stack, topics["KAFKA_RISK_TOPIC"], 1)
    assert record.key == b"Santosh.Fibonnaci@test.com"
    assert record.value == (
        b'{"customer":"Santosh.Fibonnaci@test.com","score":28.5,'
        b'"email":"Santosh.Fibonnaci@test.com","birthYear":1963}'
    )
    assert record.headers == [("riskDate", b"2020-09-14T07:54:06.417Z")]  # risk_record's
    letters = read_all(stack, topics["STEDI_DEAD_LETTER_TOPIC"], 2)
    assert [r.headers for r in letters] == [[], []]
    assert sorted(
        (json.loads(r.value)["sourceTopic"], json.loads(r.value)["reason"]) for r in letters
    ) == [
        (topics["STEDI_REDIS_TOPIC"], "value is not a Redis source record"),
        (topics["STEDI_EVENTS_TOPIC"], "value is not a JSON object"),
    ]


def test_customers_written_long_ago_join_across_restarts_and_rebuilds(
    stack, topics, tmp_path, kafka_spark
):
    """The join's query itself, run in this process (kafka_spark): the wrapper has its
    own test above."""
    now = int(time.time() * 1000)
    old40 = customer("Forty Days", "forty@test.com", "1960-01-01")
    old400 = customer("Four Hundred", "fourhundred@test.com", "1950-01-01")
    late = customer("Late Comer", "late@test.com", "1955-01-01")
    produce_at(
        stack,
        topics["STEDI_REDIS_TOPIC"],
        [
            (customer_record(old400), now - 400 * DAY_MS),
            (customer_record(old40), now - 40 * DAY_MS),
            (customer_record(SANTOSH), now - 1000),
            (customer_record(SANTOSH), now),  # written twice
            (customer_record(late), now),
        ],
    )
    produce_at(
        stack,
        topics["STEDI_EVENTS_TOPIC"],
        [
            (risk_record(old400["email"], 1.0), now),
            (risk_record(old40["email"], 2.0), now),
            (risk_record(SANTOSH["email"], 3.0), now),
            (risk_record(late["email"], 4.0), now - 10 * 60 * 1000),  # 10 minutes early
            (risk_record("nobody@test.com", 5.0), now),
        ],
    )
    kafka_spark(join_job, topics)
    first = [
        ("Santosh.Fibonnaci@test.com", 3.0),
        ("forty@test.com", 2.0),
        ("fourhundred@test.com", 1.0),
        ("late@test.com", 4.0),
    ]
    assert joined(stack, topics["KAFKA_RISK_TOPIC"], 5, timeout=10) == first

    # Restart from the checkpoint: the 400-day-old customer is still joinable, and
    # nothing the first run wrote is written again (one new record, no more).
    produce_at(stack, topics["STEDI_EVENTS_TOPIC"], [(risk_record(old400["email"], 6.0), now)])
    kafka_spark(join_job, topics)
    after_restart = sorted([*first, ("fourhundred@test.com", 6.0)])
    assert joined(stack, topics["KAFKA_RISK_TOPIC"], 7, timeout=5) == after_restart

    # A new, empty checkpoint rebuilds the customers from redis-server and joins again.
    kafka_spark(join_job, {**topics, "STEDI_CHECKPOINT_DIR": str(tmp_path / "fresh")})
    assert joined(stack, topics["KAFKA_RISK_TOPIC"], 11, timeout=10) == sorted(after_restart * 2)


@pytest.mark.slow  # spark-submit
def test_the_join_script_alone_in_an_empty_folder_runs_with_its_docstring_submit_line(
    stack, topics, tmp_path
):
    """Copied alone into an empty folder, the script runs with the `--packages` line of its
    docstring: Ivy fetches the connector from Maven Central (cached in build/ivy)."""
    folder = tmp_path / "alone"
    folder.mkdir()
    shutil.copy(services.ROOT / "sparkpykafkajoin.py", folder)
    produce(stack, topics["STEDI_REDIS_TOPIC"], [customer_record(SANTOSH)])
    produce(stack, topics["STEDI_EVENTS_TOPIC"], [risk_record(SANTOSH["email"], 9.5)])
    line = re.search(
        r"^ +(spark-submit --packages .*)$", (folder / "sparkpykafkajoin.py").read_text(), re.M
    )
    command = line.group(1).split()
    venv_bin = services.ROOT / ".venv" / "bin"
    result = subprocess.run(
        [
            str(venv_bin / "spark-submit"),
            "--master",
            "local[2]",
            "--conf",
            f"spark.jars.ivy={services.ROOT / 'build' / 'ivy'}",
            *command[1:],
            "--available-now",
        ],
        cwd=folder,
        capture_output=True,
        text=True,
        timeout=600,
        env={
            **{k: v for k, v in os.environ.items() if k != "PYTHONPATH"},
            **topics,
            "PATH": f"{venv_bin}:{os.environ['PATH']}",
            "PYSPARK_PYTHON": str(venv_bin / "python"),
            "SPARK_LOCAL_IP": "127.0.0.1",
        },
    )
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    assert sorted(p.name for p in folder.iterdir()) == ["sparkpykafkajoin.py"]
    assert joined(stack, topics["KAFKA_RISK_TOPIC"], 1) == [("Santosh.Fibonnaci@test.com", 9.5)]
