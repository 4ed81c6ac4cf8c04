"""Create regionsync's topics up front, so every consumer can subscribe before the first event and
partition counts are what we chose (Debezium and Faust would otherwise create them with defaults)."""

from __future__ import annotations

import logging

from confluent_kafka import KafkaException
from confluent_kafka.admin import AdminClient, NewTopic

from regionsync.errors import StackError
from regionsync.settings import Settings

log = logging.getLogger(__name__)


def topic_specs(settings: Settings) -> list[NewTopic]:
    n = settings.topic_partitions
    dialog_topic = getattr(settings, "dialog_topic", None)
    specs = [
        NewTopic(settings.cdc_topic, num_partitions=n, replication_factor=1),
        NewTopic(settings.cms_topic, num_partitions=n, replication_factor=1),
        # The chunks topic is the log every region (and a remote region's mirror) replays; each
        # record holds a document's whole state, so the newest record per key is enough.
        NewTopic(settings.chunks_topic, num_partitions=n, replication_factor=1),
        NewTopic(settings.dlq_topic, num_partitions=1, replication_factor=1),
        # Keyed by doc id like the topics the change agent reads with it, so a heal request and
        # that document's changes land in the same agent.
        NewTopic(settings.heal_topic, num_partitions=n, replication_factor=1),
    ]
    if dialog_topic:
        specs.append(NewTopic(dialog_topic, num_partitions=n, replication_factor=1))
    return specs


def ensure_topics(settings: Settings, timeout: float = 15.0) -> list[str]:
    """Create missing topics; return the names created."""
    admin = AdminClient({"bootstrap.servers": settings.kafka_bootstrap})
    existing = set(admin.list_topics(timeout=timeout).topics)
    wanted = [t for t in topic_specs(settings) if t.topic not in existing]
    if not wanted:
        return []
    created: list[str] = []
    for topic, future in admin.create_topics(wanted, request_timeout=timeout).items():
        try:
            future.result(timeout)
            created.append(topic)
        except KafkaException as exc:
            if exc.args and getattr(exc.args[0], "name", lambda: "")() == "TOPIC_ALREADY_EXISTS":
                continue
            raise StackError(f"cannot create topic {topic}: {exc}") from exc
    log.info("created topics: %s", ", ".join(created))
    return created
