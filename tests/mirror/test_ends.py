"""Where a partition ends (regionsync/kafka.py) on the embedded broker: tansu's ListOffsets
answers below the real end (a batch of many records, several batches in one second); the fetch
path's answer is exact, and is read from one fetch, not by reading to the end."""

from __future__ import annotations

import time

from confluent_kafka import Consumer, Producer, TopicPartition
from confluent_kafka.admin import AdminClient, NewTopic

from regionsync.kafka import fetch_ends
from regionsync.settings import Settings
from regionsync.settings_parts import KafkaSettings


def test_the_fetch_path_tells_the_real_end_where_list_offsets_does_not(two_regions: Settings) -> None:
    bootstrap = two_regions.kafka_bootstraps["east"]
    topic = f"ends-{int(time.time() * 1000)}"
    admin = AdminClient({"bootstrap.servers": bootstrap})
    for future in admin.create_topics([NewTopic(topic, 2, 1)]).values():
        future.result(15)
    producer = Producer({"bootstrap.servers": bootstrap, "linger.ms": 50, "acks": "all"})
    for _i in range(500):  # one or two big batches on partition 0
        producer.produce(topic, value=b"x" * 100, partition=0)
    producer.flush(30)
    for _i in range(5):  # several small batches within the same second on partition 1
        producer.produce(topic, value=b"y", partition=1)
        producer.flush(30)
    consumer = Consumer({"bootstrap.servers": bootstrap, "group.id": "t"})
    listed = {p: consumer.get_watermark_offsets(TopicPartition(topic, p), timeout=10, cached=False)[1] for p in (0, 1)}
    consumer.close()
    started = time.monotonic()
    ends = fetch_ends(KafkaSettings(bootstrap), [(topic, 0), (topic, 1)])
    took = time.monotonic() - started
    assert ends == {(topic, 0): 500, (topic, 1): 5}
    assert listed[0] < 500 or listed[1] < 5, "ListOffsets answered right: the trap this guards against is gone"
    assert took < 10.0
