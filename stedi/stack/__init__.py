"""The local stack without Docker: Kafka (KRaft) and Redis as real servers, and the Redis source.

`python -m stedi.stack up|down|status|clean`; `make up` / `make down` call it.
"""
