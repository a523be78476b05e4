"""Risk scores from the STEDI app, printed to the console.

Reads topic STEDI_EVENTS_TOPIC (default `stedi-events`), parses each risk
score JSON and prints customer, score and riskDate per micro-batch. Malformed
records never stop the query.

Submit (the wrapper adds the Kafka connector and the master):

    ./submit-event.sh                  # run until Ctrl-C
    ./submit-event.sh --available-now  # process what is there, then exit

What the wrapper runs (local mode, after `make install`):

    . .venv/bin/activate
    spark-submit --master 'local[*]' --jars "$(ls build/jars/spark/*.jar | paste -sd,)" \\
        sparkpyeventskafkastreamtoconsole.py
"""

from stedi.config import Settings
from stedi.sparkjob import build_session, parse_args, read_topic, run_queries, start_console
from stedi.transforms import risk_events

QUERY_NAME = "risk-events-console"


def main(argv=None) -> None:
    args = parse_args(__doc__, argv)
    settings = Settings()
    spark = build_session("stedi-risk-events", settings)
    risks = risk_events(read_topic(spark, settings, settings.events_topic))
    query = start_console(
        risks.select("customer", "score", "riskDate"), QUERY_NAME, settings, args.available_now
    )
    run_queries(spark, [query])


if __name__ == "__main__":
    main()
