"""How far a region's indexer is behind the chunks topic it reads (on its own region's broker:
the chunks topic in the source region, its copy elsewhere).

Lag of a partition = end offset - the region group's committed offset (a group that never
committed starts at the low watermark: ``auto.offset.reset=earliest``). The end is the fetch
path's high watermark (:func:`regionsync.kafka.fetch_ends`): tansu's ListOffsets answer can be
far below the real end. What is not in the region's broker yet (replication lag) is not counted
here: ``regionsync mirror status`` says that.
"""

from __future__ import annotations

from dataclasses import dataclass

from confluent_kafka import TopicPartition

from mirror import policy
from regionsync.kafka import fetch_ends, new_consumer
from regionsync.settings import Settings


@dataclass(frozen=True)
class PartitionLag:
    partition: int
    committed: int | None  # None: the group never committed on this partition
    low: int
    high: int  # as the broker reports it (tansu: may be below the real end)
    lag: int  # >= 0


def lag_report(settings: Settings, region: str, timeout: float = 5.0) -> list[PartitionLag]:
    settings = settings.for_region(region)
    # Same group id, but no subscribe(): reads the group's offsets without joining it.
    consumer = new_consumer(settings.kafka().client({"group.id": settings.region_group(region),
                                                     "enable.auto.commit": False}))
    try:
        topic = policy.chunks_topic_in(settings, region)
        meta = consumer.list_topics(topic, timeout=timeout).topics.get(topic)
        if meta is None or meta.error is not None:
            return []
        tps = [TopicPartition(topic, p) for p in sorted(meta.partitions)]
        committed = consumer.committed(tps, timeout=timeout)
        ends = fetch_ends(settings.kafka(), [(topic, tp.partition) for tp in tps], timeout)
        out = []
        for tp in committed:
            low, _listed = consumer.get_watermark_offsets(TopicPartition(topic, tp.partition), timeout=timeout,
                                                          cached=False)
            high = ends[(topic, tp.partition)]
            position = tp.offset if tp.offset >= 0 else None
            start = position if position is not None else low
            out.append(PartitionLag(tp.partition, position, low, high, max(0, high - start)))
        return out
    finally:
        consumer.close()


def region_lag(settings: Settings, region: str, timeout: float = 5.0) -> int:
    """Total records the region has not yet applied (a lower bound on tansu, see module doc)."""
    return sum(p.lag for p in lag_report(settings, region, timeout))
