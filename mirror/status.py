"""What a region holds of the others, read from its replicators' checkpoints (no broker call).

``regionsync mirror status``, ``regionsync stack status`` and the region service's promotion
check read it: per source region, the records not yet copied (as of the replicator's last look at
the source) and how old the oldest record that may be missing is.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

from mirror.checkpoints import Checkpoint, now_ms, read_all
from regionsync.pgdb import region_dsn
from regionsync.settings import Settings


@dataclass(frozen=True)
class Inbound:
    source: str
    topics: dict[str, int]  # topic (named in the source) -> records not yet copied
    lag_records: int
    lag_seconds: float  # now - the time up to which every partition is known complete here
    source_seen_s: float | None  # seconds since the source last answered the replicator
    partitions: int

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def summarise(source: str, points: dict[tuple[str, int], Checkpoint], at_ms: int) -> Inbound:
    topics: dict[str, int] = {}
    for (topic, _p), cp in points.items():
        topics[topic] = topics.get(topic, 0) + cp.lag
    fresh = min((cp.fresh_ms for cp in points.values()), default=0)
    seen = max((cp.seen_ms for cp in points.values()), default=0)
    return Inbound(
        source=source, topics=topics, lag_records=sum(topics.values()),
        lag_seconds=round(max(0.0, (at_ms - fresh) / 1000), 3) if fresh else 0.0,
        source_seen_s=round((at_ms - seen) / 1000, 3) if seen else None, partitions=len(points),
    )


def inbound(settings: Settings, region: str) -> dict[str, dict[str, Any]]:
    """Per other region: what ``region`` has not copied of it yet (empty until a replicator ran)."""
    found = read_all(region_dsn(settings, region))
    at = now_ms()
    return {src: summarise(src, found.get(src, {}), at).to_dict() for src in settings.others(region)}
