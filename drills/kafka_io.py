"""Kafka I/O of the drills: topic metadata, offsets by time, consumer-group members and offsets.

Only ``assign()`` consumers here (no ``subscribe()``): reading a range or moving a group's
offsets must not join any group, or it would itself become a member the indexer rebalances with.
"""

from __future__ import annotations

from collections.abc import Mapping

from confluent_kafka import Consumer, KafkaException, TopicPartition
from confluent_kafka.admin import AdminClient

from drills.errors import BadInput, DrillsError

TIMEOUT_S = 10.0


def reader(bootstrap: str, group: str = "regionsync-drills-reader", **extra: object) -> Consumer:
    config: dict[str, object] = {
        "bootstrap.servers": bootstrap,
        "group.id": group,
        "enable.auto.commit": False,
        "fetch.wait.max.ms": 50,
        "fetch.message.max.bytes": 16 * 1024 * 1024,
    }
    config.update(extra)
    return Consumer(config)


def watermarks(bootstrap: str, topic: str) -> dict[int, tuple[int, int]]:
    """partition -> (low, high) as the broker reports them; :class:`BadInput` for an unknown topic."""
    consumer = reader(bootstrap)
    try:
        meta = consumer.list_topics(topic, timeout=TIMEOUT_S).topics.get(topic)
        if meta is None or meta.error is not None or not meta.partitions:
            raise BadInput(f"unknown topic {topic!r} at {bootstrap}")
        return {
            p: consumer.get_watermark_offsets(TopicPartition(topic, p), timeout=TIMEOUT_S, cached=False)
            for p in sorted(meta.partitions)
        }
    finally:
        consumer.close()


def offsets_for_time(bootstrap: str, topic: str, partitions: list[int], ts_ms: int) -> dict[int, int | None]:
    """The first offset at or after ``ts_ms`` per partition; None where no record is that new
    (the range then starts at the end)."""
    consumer = reader(bootstrap)
    try:
        found = consumer.offsets_for_times([TopicPartition(topic, p, ts_ms) for p in partitions], timeout=TIMEOUT_S)
    except KafkaException as exc:
        raise DrillsError(f"{topic}: the broker cannot look offsets up by time: {exc}") from exc
    finally:
        consumer.close()
    return {tp.partition: (tp.offset if tp.offset >= 0 else None) for tp in found}


def group_members(bootstrap: str, group: str) -> int:
    """How many members ``group`` has now (0: nobody consumes, its offsets may be moved)."""
    admin = AdminClient({"bootstrap.servers": bootstrap})
    futures = admin.describe_consumer_groups([group], request_timeout=TIMEOUT_S)
    try:
        description = futures[group].result(TIMEOUT_S)
    except KafkaException as exc:
        raise DrillsError(f"cannot describe consumer group {group}: {exc}") from exc
    return len(description.members or [])


def committed(bootstrap: str, group: str, topic: str, partitions: list[int]) -> dict[int, int | None]:
    consumer = reader(bootstrap, group)
    try:
        tps = consumer.committed([TopicPartition(topic, p) for p in partitions], timeout=TIMEOUT_S)
    finally:
        consumer.close()
    return {tp.partition: (tp.offset if tp.offset >= 0 else None) for tp in tps}


def move_group(bootstrap: str, group: str, topic: str, offsets: Mapping[int, int]) -> None:
    """Commit ``offsets`` for ``group`` without joining it (the caller made sure it has no members)."""
    consumer = reader(bootstrap, group)
    try:
        result = consumer.commit(offsets=[TopicPartition(topic, p, o) for p, o in offsets.items()], asynchronous=False)
    except KafkaException as exc:
        raise DrillsError(f"cannot move {group}'s offsets on {topic}: {exc}") from exc
    finally:
        consumer.close()
    failed = [tp for tp in result or [] if tp.error is not None]
    if failed:
        raise DrillsError(f"cannot move {group}'s offsets on {topic}: {failed[0].error}")
