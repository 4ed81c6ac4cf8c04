"""Bench row 11: what the mutual-TLS link costs a replicator's read (stack/edge.py).

The same records read from a region's broker twice by a consumer configured as a replicator's
(``mirror.replicator.consumer_config``'s fetch size, assigned partitions, nothing committed):
once at the broker's own address (the in-region path), once through the region's edge with the
replicator's client certificate (``Settings.kafka_link``, the cross-region path). Both read the
same topic on the same broker in the same run, so the ratio is the edge's (TLS plus one Python
relay hop): records per second and MB per second each way.
"""

from __future__ import annotations

import os
import time
import uuid
from typing import Any

from confluent_kafka import TopicPartition
from confluent_kafka.admin import NewTopic

from regionsync.kafka import new_admin, new_consumer, new_producer
from regionsync.settings import Settings


def _fill(settings: Settings, region: str, topic: str, records: int, size: int) -> None:
    admin = new_admin(settings.kafka(region).client())
    admin.create_topics([NewTopic(topic, num_partitions=1, replication_factor=1)])[topic].result(30)
    producer = new_producer(settings.kafka(region).producer({"linger.ms": 20, "batch.num.messages": 1000}))
    payload = os.urandom(size)  # incompressible, as sealed turns are
    for i in range(records):
        producer.produce(topic, key=str(i).encode(), value=payload, partition=0)
        if i % 1000 == 999:
            producer.poll(0)
    if producer.flush(60) != 0:
        raise RuntimeError(f"bench links: {topic} not fully written")


def _read(config: dict[str, Any], topic: str, records: int, timeout_s: float = 120.0) -> float:
    consumer = new_consumer({**config, "fetch.message.max.bytes": 16 * 1024 * 1024})
    consumer.assign([TopicPartition(topic, 0, 0)])
    seen = 0
    t0 = time.perf_counter()
    deadline = time.monotonic() + timeout_s
    try:
        while seen < records:
            if time.monotonic() > deadline:
                raise TimeoutError(f"bench links: read {seen} of {records} records of {topic} in {timeout_s:.0f}s")
            for msg in consumer.consume(1000, 0.5):
                if not msg.error():
                    seen += 1
        return time.perf_counter() - t0
    finally:
        consumer.close()


def measure(settings: Settings, region: str, records: int = 100_000, size: int = 1024) -> dict[str, Any] | None:
    """None when the links are not TLS (``link_tls`` off: nothing to compare)."""
    if not settings.link_tls:
        return None
    topic = f"bench-links-{uuid.uuid4().hex[:8]}"
    _fill(settings, region, topic, records, size)
    group = f"bench-links-{uuid.uuid4().hex[:8]}"
    out: dict[str, Any] = {"region": region, "records": records, "record_bytes": size}
    for name, part in (("direct", settings.kafka(region)), ("edge", settings.kafka_link(region))):
        _read(part.reader(group), topic, min(records, 1000))  # warm: connections, TLS session, page cache
        seconds = _read(part.reader(group), topic, records)
        out[name] = {"seconds": round(seconds, 3), "records_per_s": round(records / seconds, 1),
                     "mb_per_s": round(records * size / seconds / 1e6, 2)}
    out["edge_over_direct"] = round(out["edge"]["records_per_s"] / out["direct"]["records_per_s"], 2)
    return out
