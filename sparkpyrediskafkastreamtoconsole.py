"""Customers from Redis, printed to the console.

Reads topic STEDI_REDIS_TOPIC (default `redis-server`): one record per Redis
write, published by the Redis source. Keeps the members written to the
`Customer` sorted set, decodes them (base64, then JSON) and prints email,
customerName and birthYear per micro-batch. Other keys and commands are ignored;
malformed records never stop the query.

Submit (the wrapper adds the Kafka connector and the master):

    ./submit-redis.sh                  # run until Ctrl-C
    ./submit-redis.sh --available-now  # process what is there, then exit

What the wrapper runs (local mode, after `make install`):

    . .venv/bin/activate
    spark-submit --master 'local[*]' --jars "$(ls build/jars/spark/*.jar | paste -sd,)" \\
        sparkpyrediskafkastreamtoconsole.py
"""

from stedi.config import Settings
from stedi.sparkjob import build_session, parse_args, read_topic, run_queries, start_console
from stedi.transforms import customers_from_redis

QUERY_NAME = "redis-customers-console"


def main(argv=None) -> None:
    args = parse_args(__doc__, argv)
    settings = Settings()
    spark = build_session("stedi-redis-customers", settings)
    customers = customers_from_redis(read_topic(spark, settings, settings.redis_topic))
    query = start_console(
        customers.select("email", "customerName", "birthYear"),
        QUERY_NAME,
        settings,
        args.available_now,
    )
    run_queries(spark, [query])


if __name__ == "__main__":
    main()
