"""The Redis source: single-member ZADDs written to Redis until they are records on Kafka."""

from __future__ import annotations

import sys
import time
import uuid

import redis
from kafka import TopicPartition

from bench.topics import consumer
from stedi.config import Settings


def run_redis_source(settings: Settings, count: int) -> dict:
    """`count` pipelined ZADDs of one bench key; done when as many records of that key arrived."""
    print(
        f">> Redis source: {count:,} ZADDs to {settings.redis_topic}", file=sys.stderr, flush=True
    )
    reader = consumer(settings)
    tp = TopicPartition(settings.redis_topic, 0)
    reader.assign([tp])
    reader.seek_to_end(tp)
    reader.position(tp)
    key = f"bench-{uuid.uuid4().hex[:8]}"
    client = redis.Redis(
        host=settings.redis_host, port=settings.redis_port, password=settings.redis_password
    )
    began = time.monotonic()
    pipe = client.pipeline(transaction=False)
    for i in range(count):
        pipe.zadd(key, {f'{{"n":{i}}}': 0})
        if i % 1000 == 999:
            pipe.execute()
    pipe.execute()
    seen, deadline = 0, time.monotonic() + 600
    while seen < count and time.monotonic() < deadline:
        for records in reader.poll(timeout_ms=500, max_records=5000).values():
            seen += sum(1 for r in records if r.key == key.encode())
    elapsed = time.monotonic() - began
    reader.close()
    client.delete(key)
    client.close()
    return {
        "records": seen,
        "seconds": round(elapsed, 2),
        "records_per_s": round(seen / elapsed, 1),
    }
