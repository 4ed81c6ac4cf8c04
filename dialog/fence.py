"""Fencing without a shared database: promotions, ballots and cuts. Pure: no I/O, no clock.

Each region decides from its own store who writes dialog turns. A promotion is a new *epoch*
(Raft's term, Kafka's leader epoch): the promoted region takes ``max known epoch + 1`` and
publishes the promotion on its control topic, from where replication brings it to every other
region. Promotions are ordered by their :class:`Ballot` (epoch, then region name, so two regions
that promoted themselves to the same epoch while cut off from each other still agree on a
winner); the active region is the one of the highest ballot known.

Every dialog event carries the epoch of the region that wrote it. A promotion also carries its
*cut*: for every other region, per partition of that region's dialog topic, the first source
offset the promoted region had NOT received when it took over (what its replicator had copied,
or its store had folded, whichever is further). An event of a lower ballot at or past the cut is
*fenced*: a turn the old active region accepted that the new one never saw, because it came
after the promotion (a region cut off from the others that did not know yet) or because it had
not been replicated when the old region was lost (the asynchronous RPO). Fenced events are not
folded into any region's sessions; every region lists them in its conflict report instead
(``dialog_fenced``), the same list everywhere because the rule depends only on the log.

A region that learns of a promotion after it already folded events the promotion fences (the
old active region coming back; a standby that heard of the promotion late) is *tainted*: its
sessions hold turns no other region has. It folds its logs again from the start with the
promotion known (:meth:`dialog.worker.DialogWorker.refold`), so it ends equal to the others.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

import orjson

Cut = Mapping[str, Mapping[int, int]]  # origin region -> partition -> first fenced source offset


@dataclass(frozen=True, order=True)
class Ballot:
    epoch: int
    region: str


@dataclass(frozen=True)
class Promotion:
    """``region`` writes dialog turns from ``epoch`` on; ``cut`` fences what it had not received."""

    epoch: int
    region: str
    previous: str | None = None
    cut: Cut = field(default_factory=dict)
    at_ms: int = 0

    @property
    def ballot(self) -> Ballot:
        return Ballot(self.epoch, self.region)

    def to_json(self) -> bytes:
        return orjson.dumps({
            "type": "promotion", "v": 1, "epoch": self.epoch, "region": self.region, "previous": self.previous,
            "cut": {origin: {str(p): o for p, o in parts.items()} for origin, parts in self.cut.items()},
            "at_ms": self.at_ms,
        })

    @classmethod
    def from_json(cls, raw: bytes | str) -> Promotion:
        """Decode a control record; raises ``ValueError`` (with the reason) when it is not a promotion."""
        try:
            data: Any = orjson.loads(raw)
        except orjson.JSONDecodeError as exc:
            raise ValueError(f"not JSON: {exc}") from None
        if not isinstance(data, dict) or data.get("type") != "promotion":
            raise ValueError("not a promotion record")
        try:
            cut = {str(origin): {int(p): int(o) for p, o in parts.items()} for origin, parts in data["cut"].items()}
            epoch, region = int(data["epoch"]), str(data["region"])
        except (KeyError, TypeError, ValueError, AttributeError) as exc:
            raise ValueError(f"malformed promotion: {exc!r}") from None
        if epoch < 1 or not region:
            raise ValueError(f"malformed promotion: epoch {epoch}, region {region!r}")
        previous = data.get("previous")
        return cls(epoch, region, None if previous is None else str(previous), cut, int(data.get("at_ms") or 0))

    def key(self) -> bytes:
        """The control record's key: one per ballot, so a compacted control topic keeps every promotion."""
        return f"promotion:{self.epoch}:{self.region}".encode()


def genesis(source_region: str) -> Promotion:
    """The role before any promotion: the source region writes, at epoch 1."""
    return Promotion(1, source_region)


def active(promotions: Iterable[Promotion], source_region: str) -> Promotion:
    """The promotion of the highest ballot (the genesis one if there is none)."""
    return max([genesis(source_region), *promotions], key=lambda p: p.ballot)


def next_epoch(promotions: Iterable[Promotion], source_region: str) -> int:
    return active(promotions, source_region).epoch + 1


def event_ballot(epoch: int, origin: str) -> Ballot:
    return Ballot(epoch, origin)


def fenced_by(
    promotions: Iterable[Promotion], origin: str, partition: int, source_offset: int, ballot: Ballot
) -> Promotion | None:
    """The promotion that fences an event of ``ballot`` found at ``source_offset`` of partition
    ``partition`` of ``origin``'s dialog topic, or None: the event is folded."""
    found: Promotion | None = None
    for promo in promotions:
        if promo.ballot <= ballot:
            continue
        parts = promo.cut.get(origin)
        if parts is None:
            continue  # the promotion did not know this region: it fences nothing of it
        if source_offset >= parts.get(partition, 0) and (found is None or promo.ballot < found.ballot):
            found = promo
    return found


def tainted(promotion: Promotion, folded: Mapping[tuple[str, int], int]) -> list[tuple[str, int]]:
    """The (origin, partition) pairs whose folded source position (``folded``: next source
    offset per origin and partition) is past ``promotion``'s cut: this store may hold events the
    promotion fences. Empty: the promotion changes nothing already folded."""
    out = []
    for origin, parts in promotion.cut.items():
        for (o, p), next_offset in folded.items():
            if o == origin and next_offset > parts.get(p, 0):
                out.append((o, p))
    return sorted(out)


def cut_of(received: Mapping[tuple[str, int], int], promoting: str, regions: Iterable[str]) -> dict[str, dict[int, int]]:
    """The cut of a promotion of ``promoting``: what it had received of every other region
    (next source offset per origin and partition). A region it received nothing from is in the
    cut too, with no partitions: all of its lower-ballot events are fenced."""
    cut: dict[str, dict[int, int]] = {r: {} for r in regions if r != promoting}
    for (origin, partition), next_offset in received.items():
        if origin in cut:
            cut[origin][partition] = max(cut[origin].get(partition, 0), next_offset)
    return cut
