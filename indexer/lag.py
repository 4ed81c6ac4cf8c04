"""How far a region's indexer is behind the chunks topic.

Lag of a partition = end offset - the region group's committed offset (a group that never
committed starts at the low watermark: ``auto.offset.reset=earliest``).

On tansu the reported end offset (ListOffsets latest / high watermark) is the *last batch's base
offset + 1*, which can be lower than the real end (see shared/STACK.md). So a figure here is a
lower bound of the true lag: it can read 0 while up to one producer batch is still unapplied, and
the committed offset can exceed the reported end; such negative differences are clamped to 0.
On Apache Kafka the figures are exact.
"""

from __future__ import annotations

from dataclasses import dataclass

from confluent_kafka import Consumer, TopicPartition

from regionsync.settings import Settings


@dataclass(frozen=True)
class PartitionLag:
    partition: int
    committed: int | None  # None: the group never committed on this partition
    low: int
    high: int  # as the broker reports it (tansu: may be below the real end)
    lag: int  # >= 0


def lag_report(settings: Settings, region: str, timeout: float = 5.0) -> list[PartitionLag]:
    consumer = Consumer(
        {
            "bootstrap.servers": settings.kafka_bootstrap,
            # Same group id, but no subscribe(): reads the group's offsets without joining it.
            "group.id": settings.region_group(region),
            "enable.auto.commit": False,
        }
    )
    try:
        topic = settings.chunks_topic
        meta = consumer.list_topics(topic, timeout=timeout).topics.get(topic)
        if meta is None or meta.error is not None:
            return []
        tps = [TopicPartition(topic, p) for p in sorted(meta.partitions)]
        committed = consumer.committed(tps, timeout=timeout)
        out = []
        for tp in committed:
            low, high = consumer.get_watermark_offsets(TopicPartition(topic, tp.partition), timeout=timeout, cached=False)
            position = tp.offset if tp.offset >= 0 else None
            start = position if position is not None else low
            out.append(PartitionLag(tp.partition, position, low, high, max(0, high - start)))
        return out
    finally:
        consumer.close()


def region_lag(settings: Settings, region: str, timeout: float = 5.0) -> int:
    """Total records the region has not yet applied (a lower bound on tansu, see module doc)."""
    return sum(p.lag for p in lag_report(settings, region, timeout))
