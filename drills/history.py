"""Did the CMS producers' topic lose its history? A pure decision over offsets.

Documents published straight to Kafka have no table behind them: the topic is their only source
of truth. When the topic is recreated (the embedded broker keeps topics in memory, so a restart
brings it back empty) or retention removes old events, a reconcile that read "no event" as "should
not exist" would delete every such document from every region. The regions remember where each
document came from (the chunk rows' ``source``: topic, partition, offset), which is the evidence:

* a region applied an event at an offset the partition does not reach any more (``>= end``): the
  partition's offsets went back, so it was recreated and everything before is gone;
* a region holds a document from the topic that has no event of it on the topic at all.

Either way the report says so, with the offsets, and the repair deletes none of those documents.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class PartitionHistory:
    partition: int
    low: int
    end: int
    highest_held: int | None  # highest offset of this partition any region applied (None: none)
    held_by: tuple[str, ...] = ()  # the regions whose offsets are at or past the end

    @property
    def went_back(self) -> bool:
        return self.highest_held is not None and self.highest_held >= self.end


@dataclass(frozen=True)
class CmsHistory:
    topic: str
    partitions: tuple[PartitionHistory, ...]
    orphans: tuple[str, ...]  # documents held from the topic with no event of it left

    @property
    def lost(self) -> bool:
        return bool(self.orphans) or any(p.went_back for p in self.partitions)

    def evidence(self) -> list[str]:
        out = []
        for p in self.partitions:
            if p.went_back:
                out.append(
                    f"{self.topic}[{p.partition}] holds offsets {p.low}..{p.end} but {', '.join(p.held_by)} "
                    f"applied offset {p.highest_held}: the partition was recreated and its history is gone"
                )
        if self.orphans:
            out.append(
                f"{len(self.orphans)} documents held from {self.topic} have no event on it any more "
                f"(e.g. {', '.join(self.orphans[:5])}): not deleted"
            )
        return out

    def to_dict(self) -> dict[str, Any]:
        return {
            "topic": self.topic,
            "lost": self.lost,
            "partitions": [
                {"partition": p.partition, "low": p.low, "end": p.end, "highest_held": p.highest_held,
                 "went_back": p.went_back, "held_by": list(p.held_by)}
                for p in self.partitions
            ],
            "orphans": list(self.orphans),
            "evidence": self.evidence(),
        }


def held_offsets(topic: str, rows: Iterable[Mapping[str, Any]]) -> dict[int, int]:
    """Per partition of ``topic``, the highest offset the given chunk rows were applied from."""
    out: dict[int, int] = {}
    for row in rows:
        src = row.get("source")
        if not isinstance(src, Mapping) or src.get("topic") != topic or src.get("offset") is None:
            continue
        partition, offset = int(src.get("partition") or 0), int(src["offset"])
        if offset >= 0:
            out[partition] = max(out.get(partition, offset), offset)
    return out


def assess(
    topic: str,
    watermarks: Mapping[int, tuple[int, int]],
    held: Mapping[str, Mapping[int, int]],
    orphans: Iterable[str],
) -> CmsHistory:
    """``watermarks``: partition -> (low, end) of the topic now; ``held``: region -> partition ->
    highest offset applied (:func:`held_offsets`); ``orphans``: documents held from the topic that
    have no event on it."""
    parts = []
    for partition in sorted(set(watermarks) | {p for h in held.values() for p in h}):
        low, end = watermarks.get(partition, (0, 0))
        offsets = {region: h[partition] for region, h in held.items() if partition in h}
        highest = max(offsets.values(), default=None)
        past = tuple(sorted(r for r, o in offsets.items() if o >= end))
        parts.append(PartitionHistory(partition, low, end, highest, past))
    return CmsHistory(topic, tuple(parts), tuple(sorted(set(orphans))))
