"""How to repair drift through the pipeline's own path: a pure decision over plain data.

* A document whose row is in the table (published or not): the change agent re-reads the row
  (a heal request, drills/reread.py) and publishes its whole state at the current WAL position,
  newer than anything a region holds, so every region applies it: a published row is written
  whole, an unpublished one removed.
* A document of the CMS producers' topic: its newest event is published again. Regions holding
  an older version apply it; a region already at that version (a wrong chunk set at the current
  version) cannot be reached this way without a new version from the producer, and is reported
  as such: inventing a version would shadow the producer's next one.
* A document a region holds from the CMS producers' topic while that topic has no event of it any
  more (it was recreated: the embedded broker keeps topics in memory; or retention removed its
  events): never deleted. Nothing says the producer deleted it; only its events are gone. It is
  reported, with the topic's loss, for the producer to publish again (drills/history.py).
* A document in no source that a region still holds: a delete record on the chunks topic at a
  version above the highest any region holds, so every region's version guard applies it, and a
  later re-insert (a newer WAL position or a newer producer version) still wins.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from drills.diff import Drift, DriftKind, Origin


@dataclass(frozen=True)
class RepairPlan:
    reread_ids: tuple[str, ...] = ()  # rows the change agent must read again and publish whole
    republish_ids: tuple[str, ...] = ()  # CMS documents whose newest event is published again
    deletes: tuple[tuple[str, int], ...] = ()  # (doc id, version) delete records for the chunks topic
    unrepairable: tuple[tuple[str, str], ...] = field(default=())  # (doc id, why)

    @property
    def empty(self) -> bool:
        return not (self.reread_ids or self.republish_ids or self.deletes)

    def to_dict(self) -> dict[str, Any]:
        return {
            "reread_ids": list(self.reread_ids),
            "republish_ids": list(self.republish_ids),
            "deletes": [{"doc_id": d, "version": v} for d, v in self.deletes],
            "unrepairable": [{"doc_id": d, "why": w} for d, w in self.unrepairable],
        }


def plan_repair(
    drifts: Sequence[Drift],
    cms_versions: Mapping[str, int],
    held_versions: Mapping[str, Mapping[str, int]],
) -> RepairPlan:
    """``cms_versions``: the newest CMS event's version per document; ``held_versions``: per
    region, the highest version it holds per document (chunks or bookkeeping, deleted markers
    included)."""
    reread: set[str] = set()
    republish: set[str] = set()
    deletes: dict[str, int] = {}
    unrepairable: dict[str, str] = {}
    for drift in drifts:
        doc_id = drift.doc_id
        # A delete record must be newer than what every region holds, drifted or not.
        highest = max((h[doc_id] for h in held_versions.values() if doc_id in h), default=None)
        if drift.origin is Origin.TABLE:
            reread.add(doc_id)
        elif drift.origin is Origin.CMS:
            version = cms_versions[doc_id]
            held = held_versions.get(drift.region, {}).get(doc_id)
            if held is None or held < version:
                republish.add(doc_id)  # the drifted region applies it; the others skip it
            elif drift.kind is DriftKind.DELETED_OR_UNPUBLISHED:
                deletes[doc_id] = (highest or held) + 1
            else:
                unrepairable[doc_id] = (
                    f"{drift.region} holds version {held} >= the newest CMS event's {version}: "
                    "the producer must publish a new version"
                )
        elif drift.origin is Origin.CMS_LOST:
            unrepairable[doc_id] = (
                "the CMS topic has no event of it any more (history lost): not deleted; "
                "publish it again from the CMS producer (or delete it there)"
            )
        elif drift.kind is DriftKind.DELETED_OR_UNPUBLISHED:
            base = max((v for v in (highest, drift.held_version) if v is not None), default=0)
            deletes[doc_id] = max(deletes.get(doc_id, 0), base + 1)
    # One region's copy held from a lost CMS history protects the document in every region: a
    # delete record on the chunks topic would reach them all.
    lost = {d.doc_id for d in drifts if d.origin is Origin.CMS_LOST}
    deletes = {doc_id: v for doc_id, v in deletes.items() if doc_id not in lost}
    return RepairPlan(
        tuple(sorted(reread)),
        tuple(sorted(republish - set(deletes))),
        tuple(sorted(deletes.items())),
        tuple(sorted((d, w) for d, w in unrepairable.items() if d not in republish and d not in deletes)),
    )
