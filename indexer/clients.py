"""The indexer's Kafka clients: its region's consumer group and the producer of its dead letters
and heal requests (built by the one Kafka adapter, regionsync/kafka.py)."""

from __future__ import annotations

from confluent_kafka import Consumer, Producer

from regionsync.kafka import new_consumer, new_producer
from regionsync.settings import Settings


def make_consumer(settings: Settings, region: str) -> Consumer:
    return new_consumer(
        settings.kafka().member(settings.region_group(region), {
            "client.id": f"regionsync-indexer-{region}",
            # Pick up a chunks topic created after we subscribed within seconds, not 5 minutes.
            "topic.metadata.refresh.interval.ms": 5000,
            # Records carry whole documents with their vectors: allow big ones.
            "fetch.message.max.bytes": 16 * 1024 * 1024,
            # An indexer holds its batch through a Milvus outage, polling nothing. With the default
            # 5 minutes it would be evicted and a second instance of the region would take its
            # partitions while it may still write the old batch: two writers of one document, no
            # fencing, and the older write could land last. Every instance of a region writes the
            # same Milvus, so moving the partitions would not apply them sooner anyway; a dead
            # instance is still found by the session timeout (librdkafka heartbeats in a thread).
            "max.poll.interval.ms": 86_400_000,
        })
    )


def make_dlq_producer(settings: Settings) -> Producer:
    return new_producer(settings.kafka().producer({"linger.ms": 5}))
