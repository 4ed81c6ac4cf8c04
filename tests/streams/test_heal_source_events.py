"""Reading CMS events again by their coordinates (a heal of a meta record made from one), on the
source region's real broker: tansu on its object store, whose ListOffsets(latest) answer is below
the real end (regionsync/kafka.py). An event there is read, never judged "gone"."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from confluent_kafka import Producer
from confluent_kafka.admin import AdminClient, NewTopic

from regionsync.settings import Settings
from stack import broker, seaweed
from streams.heal import KafkaSourceEvents
from tests.stacks import free_settings
from tests.state_dirs import private_state_dir

pytestmark = pytest.mark.integration  # starts real services

TOPIC = "regionsync.cms.documents.heal-test"


@pytest.fixture(scope="module")
def source() -> Iterator[Settings]:
    """The source region's object store and broker only (no Postgres: nothing here needs it)."""
    with private_state_dir("streams-heal") as state:
        settings = free_settings(state)
        region = settings.source_region
        try:
            seaweed.start(settings, region)
            broker.start(settings, region)
            yield settings.source()
        finally:
            broker.stop(settings, region)
            seaweed.stop(settings, region)


def produce(settings: Settings, records: list[tuple[bytes, bytes]]) -> list[int]:
    """One batch (linger), acks=all; the offsets in partition 0."""
    producer = Producer({"bootstrap.servers": settings.kafka_bootstrap, "acks": "all", "linger.ms": 200})
    offsets: list[int] = []
    for key, value in records:
        producer.produce(TOPIC, key=key, value=value, partition=0,
                         on_delivery=lambda err, msg: offsets.append(msg.offset()) if err is None else None)
    assert producer.flush(30) == 0 and len(offsets) == len(records)
    return sorted(offsets)


def test_every_event_of_a_fresh_batch_is_read_again(source: Settings) -> None:
    admin = AdminClient({"bootstrap.servers": source.kafka_bootstrap})
    for future in admin.create_topics([NewTopic(TOPIC, num_partitions=1, replication_factor=1)]).values():
        future.result(15)
    records = [(f"doc-{i}".encode(), f'{{"id": "doc-{i}", "body": "text {i}"}}'.encode()) for i in range(5)]
    offsets = produce(source, records)
    wanted = [(TOPIC, 0, o) for o in offsets]
    found = KafkaSourceEvents(source).fetch([*wanted, (TOPIC, 0, offsets[-1] + 100)])  # and one never written
    assert found == {(TOPIC, 0, o): rec for o, rec in zip(offsets, records, strict=True)}
