"""The Redis source: every Redis write, published to Kafka in the original connector's format.

- records.py      Redis command -> connector JSON record (pure)
- replication.py  a Redis replication client (REPLCONF/PSYNC, RESP command stream)
- publisher.py    the loop: resume position from Kafka, PSYNC, publish, acknowledge
Run it with `python -m stedi.redis_source`.
"""
