"""Risk scores joined with customer birth years, written to Kafka.

Reads STEDI_REDIS_TOPIC (customers) and STEDI_EVENTS_TOPIC (risk scores),
inner-joins them on email and writes one JSON record per risk score to
KAFKA_RISK_TOPIC (default `customer-risk`), keyed by email:

    {"customer":"Santosh.Fibonnaci@test.com","score":28.5,
     "email":"Santosh.Fibonnaci@test.com","birthYear":1963}

A customer stays joinable for STEDI_CUSTOMER_TTL (default 7 days); a risk score
waits STEDI_RISK_WAIT (default 1 hour) for a customer that has not arrived yet.
Malformed customer and risk records go to STEDI_DEAD_LETTER_TOPIC (default
`stedi-dead-letter`) with the reason, by a second query.

Submit (the wrapper adds the Kafka connector and the master):

    ./submit-join.sh                  # run until Ctrl-C
    ./submit-join.sh --available-now  # process what is there, then exit

What the wrapper runs (local mode, after `make install`):

    . .venv/bin/activate
    spark-submit --master 'local[*]' --jars "$(ls build/jars/spark/*.jar | paste -sd,)" \\
        sparkpykafkajoin.py
"""

from stedi.config import Settings
from stedi.sparkjob import build_session, parse_args, read_topic, run_queries, start_kafka
from stedi.transforms import (
    customer_risk_records,
    customers_from_redis,
    dead_letters,
    join_risk_with_customers,
    redis_customer_members,
    risk_events,
    risk_events_with_problems,
)

JOIN_QUERY = "customer-risk-join"
DEAD_LETTER_QUERY = "customer-risk-dead-letters"


def main(argv=None) -> None:
    args = parse_args(__doc__, argv)
    settings = Settings()
    spark = build_session("stedi-customer-risk", settings)
    redis_records = read_topic(spark, settings, settings.redis_topic)
    event_records = read_topic(spark, settings, settings.events_topic)

    joined = join_risk_with_customers(
        customers_from_redis(redis_records),
        risk_events(event_records),
        settings.customer_ttl,
        settings.risk_wait,
    )
    problems = dead_letters(redis_customer_members(redis_records)).union(
        dead_letters(risk_events_with_problems(event_records))
    )
    queries = [
        start_kafka(
            customer_risk_records(joined),
            JOIN_QUERY,
            settings.risk_topic,
            settings,
            args.available_now,
        ),
        start_kafka(
            problems,
            DEAD_LETTER_QUERY,
            settings.dead_letter_topic,
            settings,
            args.available_now,
        ),
    ]
    run_queries(spark, queries)


if __name__ == "__main__":
    main()
