"""Which topics cross from one region to another, and what they are called there.

MirrorMaker 2's ``DefaultReplicationPolicy``: a topic ``T`` of region ``east`` is ``east.T`` on
every other region's broker. Only a region's own (local) topics are replicated, never remote
ones, so a record cannot come back to where it started. Pure functions over the settings.

What flows where:

* knowledge records (the chunks topic) from the source region to every other region;
* dialog events and control events (promotions) from every region to every other one;
* heal requests ("this region lacks document X") from every other region to the source region,
  whose change agent answers them on the chunks topic.
"""

from __future__ import annotations

from regionsync.settings import Settings

SEPARATOR = "."


def remote_topic(source_region: str, topic: str) -> str:
    """The name of ``source_region``'s topic ``topic`` on another region's broker."""
    return f"{source_region}{SEPARATOR}{topic}"


def topic_in(region: str, origin: str, topic: str) -> str:
    """The name under which ``region``'s broker holds ``origin``'s topic ``topic``."""
    return topic if region == origin else remote_topic(origin, topic)


def origin_of(topic: str, region: str, regions: list[str]) -> str:
    """The region a topic on ``region``'s broker comes from (``region`` itself for a local one)."""
    head, sep, _rest = topic.partition(SEPARATOR)
    if sep and head in regions and head != region:
        return head
    return region


def replicated_topics(settings: Settings, source: str, target: str) -> list[str]:
    """The local topics of ``source`` that its replicator into ``target`` copies."""
    if source == target:
        raise ValueError(f"no replication from region {source} to itself")
    topics = [settings.dialog_topic, settings.control_topic]
    if source == settings.source_region:
        topics.append(settings.chunks_topic)
    if target == settings.source_region:
        topics.append(settings.heal_topic)
    return topics


def inbound_topics(settings: Settings, region: str, topic: str) -> list[str]:
    """Every name of ``topic`` on ``region``'s broker that a consumer there folds: its own and the
    copies of every other region's, in the order of ``settings.regions``."""
    return [topic_in(region, origin, topic) for origin in settings.regions]


def chunks_topic_in(settings: Settings, region: str) -> str:
    """The knowledge records a region's indexer applies: the source region's chunks topic."""
    return topic_in(region, settings.source_region, settings.chunks_topic)
