"""The Redis source: every Redis write, published to Kafka in the original connector's format.

- records.py      Redis command -> connector JSON record, and the too-large dead letter (pure)
- replication.py  a Redis replication client (REPLCONF/PSYNC, RESP command stream, read deadlines)
- delivery.py     a Kafka producer whose every record is confirmed before it counts
- state.py        the durable state file and where to resume
- health.py       the health file, `ready()`, and `python -m stedi.redis_source.health`
- metrics.py      Prometheus metrics on STEDI_REDIS_SOURCE_METRICS_PORT
- publisher.py    the loop: resume position, PSYNC, publish, confirm, save, acknowledge
Run it with `python -m stedi.redis_source`.
"""
