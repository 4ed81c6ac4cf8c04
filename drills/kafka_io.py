"""Kafka I/O of the drills: topic metadata, offsets by time, consumer-group members and offsets.

Only ``assign()`` consumers here (no ``subscribe()``): reading a range or moving a group's
offsets must not join any group, or it would itself become a member the indexer rebalances with.
"""

from __future__ import annotations

from collections.abc import Mapping

from confluent_kafka import Consumer, KafkaException, TopicPartition

from drills.errors import BadInput, DrillsError
from regionsync.kafka import new_admin, new_consumer
from regionsync.settings_parts import KafkaSettings

TIMEOUT_S = 10.0


def reader(kafka: KafkaSettings, group: str = "regionsync-drills-reader", **extra: object) -> Consumer:
    return new_consumer(kafka.client({
        "group.id": group,
        "enable.auto.commit": False,
        "fetch.wait.max.ms": 50,
        "fetch.message.max.bytes": 16 * 1024 * 1024,
        **extra,
    }))


def watermarks(kafka: KafkaSettings, topic: str, probe: bool = False) -> dict[int, tuple[int, int]]:
    """partition -> (low, end); :class:`BadInput` for an unknown topic.

    tansu reports the last batch's base offset + 1 as the high watermark (shared/STACK.md), below
    the real end when the last batch held several records. With ``probe`` the end is where
    reading from the reported one finds nothing more (a few empty polls): exact on both brokers.
    """
    consumer = reader(kafka)
    try:
        meta = consumer.list_topics(topic, timeout=TIMEOUT_S).topics.get(topic)
        if meta is None or meta.error is not None or not meta.partitions:
            raise BadInput(f"unknown topic {topic!r} at {kafka.bootstrap}")
        out = {
            p: consumer.get_watermark_offsets(TopicPartition(topic, p), timeout=TIMEOUT_S, cached=False)
            for p in sorted(meta.partitions)
        }
        if probe:
            out = {p: (low, _probe_end(consumer, topic, p, high)) for p, (low, high) in out.items()}
        return out
    finally:
        consumer.close()


def _probe_end(consumer: Consumer, topic: str, partition: int, high: int, idle_polls: int = 3) -> int:
    consumer.assign([TopicPartition(topic, partition, high)])
    end, empty = high, 0
    while empty < idle_polls:
        msgs = consumer.consume(500, 0.2)
        if not msgs:
            empty += 1
            continue
        empty = 0
        end = max([end] + [(m.offset() or 0) + 1 for m in msgs if m.error() is None])
    return end


def timestamp_at(kafka: KafkaSettings, topic: str, partition: int, offset: int) -> int | None:
    consumer = reader(kafka)
    try:
        consumer.assign([TopicPartition(topic, partition, offset)])
        for _ in range(10):
            for msg in consumer.consume(1, 0.5):
                if msg.error() is None:
                    return int(msg.timestamp()[1]) if msg.offset() == offset else None
        return None
    finally:
        consumer.close()


def first_offset_at_or_after(kafka: KafkaSettings, topic: str, partition: int, start: int, end: int, ts_ms: int) -> int:
    """Scan ``[start, end)`` for the first record with a timestamp >= ``ts_ms`` (``end`` if none)."""
    consumer = reader(kafka)
    try:
        consumer.assign([TopicPartition(topic, partition, start)])
        empty = 0
        while empty < 5:
            msgs = consumer.consume(500, 0.2)
            if not msgs:
                empty += 1
                continue
            empty = 0
            for msg in msgs:
                if msg.error() is not None:
                    continue
                offset = msg.offset() or 0
                if offset >= end:
                    return end
                if msg.timestamp()[1] >= ts_ms:
                    return offset
        return end
    finally:
        consumer.close()


def offsets_for_time(kafka: KafkaSettings, topic: str, partitions: list[int], ts_ms: int) -> dict[int, int | None]:
    """The first offset at or after ``ts_ms`` per partition; None where no record is that new
    (the range then starts at the end)."""
    consumer = reader(kafka)
    try:
        found = consumer.offsets_for_times([TopicPartition(topic, p, ts_ms) for p in partitions], timeout=TIMEOUT_S)
    except KafkaException as exc:
        raise DrillsError(f"{topic}: the broker cannot look offsets up by time: {exc}") from exc
    finally:
        consumer.close()
    return {tp.partition: (tp.offset if tp.offset >= 0 else None) for tp in found}


def group_members(kafka: KafkaSettings, group: str) -> int:
    """How many members ``group`` has now (0: nobody consumes, its offsets may be moved)."""
    admin = new_admin(kafka.client())
    futures = admin.describe_consumer_groups([group], request_timeout=TIMEOUT_S)
    try:
        description = futures[group].result(TIMEOUT_S)
    except KafkaException as exc:
        raise DrillsError(f"cannot describe consumer group {group}: {exc}") from exc
    return len(description.members or [])


def committed(kafka: KafkaSettings, group: str, topic: str, partitions: list[int]) -> dict[int, int | None]:
    consumer = reader(kafka, group)
    try:
        tps = consumer.committed([TopicPartition(topic, p) for p in partitions], timeout=TIMEOUT_S)
    finally:
        consumer.close()
    return {tp.partition: (tp.offset if tp.offset >= 0 else None) for tp in tps}


def move_group(kafka: KafkaSettings, group: str, topic: str, offsets: Mapping[int, int]) -> None:
    """Commit ``offsets`` for ``group`` without joining it (the caller made sure it has no members)."""
    consumer = reader(kafka, group)
    try:
        result = consumer.commit(offsets=[TopicPartition(topic, p, o) for p, o in offsets.items()], asynchronous=False)
    except KafkaException as exc:
        raise DrillsError(f"cannot move {group}'s offsets on {topic}: {exc}") from exc
    finally:
        consumer.close()
    failed = [tp for tp in result or [] if tp.error is not None]
    if failed:
        raise DrillsError(f"cannot move {group}'s offsets on {topic}: {failed[0].error}")
