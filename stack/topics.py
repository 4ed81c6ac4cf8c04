"""Create a region's topics up front, so every consumer can subscribe before the first event and
partition counts are what we chose (Debezium, Faust and the replicators would otherwise create
them with defaults).

Every region holds its own dialog, control, dead-letter and heal-request topics; the source
region also the CMS topics and the chunks topic; and every region the copies of the other
regions' topics that its replicators bring (:func:`mirror.policy.replicated_topics`), with the
same partition counts as their originals (a replicated record keeps its partition).
"""

from __future__ import annotations

import logging

from confluent_kafka import KafkaException
from confluent_kafka.admin import NewTopic

from mirror import policy
from regionsync.errors import StackError
from regionsync.kafka import new_admin
from regionsync.settings import Settings

log = logging.getLogger(__name__)


def partitions(settings: Settings, topic: str) -> int:
    """Partition count of one of regionsync's topics (a remote copy has its original's)."""
    if topic in (settings.dlq_topic, settings.control_topic):
        return 1
    return settings.topic_partitions


def local_topics(settings: Settings, region: str) -> list[str]:
    topics = [settings.dialog_topic, settings.control_topic, settings.dlq_topic, settings.heal_topic]
    if region == settings.source_region:
        # The chunks topic is the log every region replays; each record holds a document's whole
        # state, so the newest record per key is enough. Heal requests are keyed by doc id like the
        # topics the change agent reads with them, so a request and that document's changes land in
        # the same agent.
        topics += [settings.cdc_topic, settings.cms_topic, settings.chunks_topic]
    return topics


def topic_specs(settings: Settings, region: str) -> list[NewTopic]:
    specs = [NewTopic(t, num_partitions=partitions(settings, t), replication_factor=1)
             for t in local_topics(settings, region)]
    for origin in settings.others(region):
        for topic in policy.replicated_topics(settings, origin, region):
            specs.append(NewTopic(policy.remote_topic(origin, topic), num_partitions=partitions(settings, topic),
                                  replication_factor=1))
    return specs


def ensure_topics(settings: Settings, region: str | None = None, timeout: float = 15.0) -> list[str]:
    """Create the missing topics of ``region`` (default: the source region) on its broker."""
    region = region or settings.source_region
    admin = new_admin(settings.kafka(region).client())
    existing = set(admin.list_topics(timeout=timeout).topics)
    wanted = [t for t in topic_specs(settings, region) if t.topic not in existing]
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
            raise StackError(f"cannot create topic {topic} in region {region}: {exc}") from exc
    log.info("region %s: created topics %s", region, ", ".join(created))
    return created
