"""A region's dialog state store: session states plus the log positions they reflect.

The one rule: states and positions change together, in one transaction (:meth:`StateStore.commit`),
so after any crash the store holds exactly the states folded from the log up to the stored
positions, and a restarted worker resumes at those positions: every event is applied to the
stored state exactly once. ``commit`` also checks that the positions it moves from are the ones
stored (compare-and-set), so a second worker on the same store fails loudly instead of
interleaving with the first.

A region folds several topics (its own dialog topic and the copies of every other region's,
plus the control topics: :mod:`mirror.policy`), so a position is per (topic, partition). Beside
it the store keeps, per (origin region, partition), the next *source* offset folded (a copied
record's offset in its own region, from its provenance header): promotions cut the log in those
coordinates (:mod:`dialog.fence`). The same transaction records the promotions the worker read
and the fenced events it set aside (the conflict report), so those are exact across crashes too.

Two implementations with one contract (tests/dialog/test_store_contract.py):
:class:`dialog.memory_store.MemoryStore` and :class:`dialog.pg_store.PostgresStore` (one database
per region, created on demand). This module holds what they share: the contract and its types.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, fields
from typing import Any, Protocol

import orjson

from dialog import sealing
from dialog.events import KeyLookup
from dialog.fence import Promotion
from dialog.keys import KeyRing
from dialog.state import SessionState

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Stats:
    """Counters kept in the same transaction as the states (so they are exact across crashes)."""

    applied: int = 0
    duplicates: int = 0
    conflicts: int = 0
    late: int = 0
    gaps: int = 0
    dead_letters: int = 0
    fenced: int = 0  # events set aside by a promotion's cut (dialog/fence.py)
    erased: int = 0  # events not applied: their session was erased (dialog/keys.py)
    unopened: int = 0  # events folded with their personal fields blank: no key for their session

    def __add__(self, other: Stats) -> Stats:
        return Stats(*(getattr(self, f.name) + getattr(other, f.name) for f in fields(self)))

    def to_dict(self) -> dict[str, int]:
        return {f.name: getattr(self, f.name) for f in fields(self)}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Stats:
        return cls(**{f.name: int(data.get(f.name, 0)) for f in fields(cls)})


TP = tuple[str, int]  # (topic, partition) as named on this region's broker
Origin = tuple[str, int]  # (origin region, partition of its dialog topic)


@dataclass(frozen=True)
class FencedEvent:
    """A dialog event no region folds: a promotion's cut fences it (see :mod:`dialog.fence`)."""

    origin: str
    partition: int
    source_offset: int
    session_id: str
    seq: int
    event_id: str
    epoch: int
    fenced_epoch: int
    fenced_region: str
    event: bytes  # the record's value, as written: the conflict report shows the turn

    def to_dict(self, keys: KeyLookup | None = None) -> dict[str, Any]:
        """Plain JSON; with ``keys`` (the region's) a sealed turn is shown opened, so an operator
        can see what the customer was told (dialog/sealing.py). Without its key it stays sealed."""
        out: dict[str, Any] = {f.name: getattr(self, f.name) for f in fields(self) if f.name != "event"}
        try:
            out["event"] = orjson.loads(self.event)
        except orjson.JSONDecodeError:
            out["event"] = self.event.decode("utf-8", "replace")
            return out
        event = out["event"]
        if keys is not None and isinstance(event, dict) and sealing.is_sealed(event):
            key = keys(self.session_id, str(event.get(sealing.KID)))
            if key is not None:
                try:
                    out["event"] = sealing.open_sealed(event, key)
                except sealing.SealError:
                    pass  # shown as it is in the log
        return out


class StateStore(Protocol):
    topic: str  # the region's own dialog topic (names the counters)

    @property
    def keyring(self) -> KeyRing:
        """The sessions' keys and the erased sessions, in the same database (dialog/keys.py)."""
        ...

    def get(self, session_id: str) -> SessionState | None:
        """The stored state of one session (None if the store never saw it)."""
        ...

    def all_states(self) -> list[SessionState]:
        """Every stored state (a worker loads them once at start; snapshots write them)."""
        ...

    def count(self) -> int: ...

    def offsets(self) -> dict[TP, int]:
        """(topic, partition) -> next offset to consume. Empty: never consumed anything."""
        ...

    def sources(self) -> dict[Origin, int]:
        """(origin region, partition) -> next source offset consumed of that region's dialog topic."""
        ...

    def folded(self) -> dict[Origin, int]:
        """(origin region, partition) -> one past the source offset of the newest event folded."""
        ...

    def stats(self) -> Stats: ...

    def promotions(self) -> list[Promotion]:
        """Every promotion this store knows (its own and those read from other regions)."""
        ...

    def fenced(self) -> list[FencedEvent]:
        """The conflict report: every event set aside, oldest first."""
        ...

    def is_empty(self) -> bool:
        """No states and no positions: a store that a rebuild may fill from a snapshot."""
        ...

    def commit(
        self, states: Iterable[SessionState], offsets: Mapping[TP, int], expected: Mapping[TP, int], stats: Stats,
        *, sources: Mapping[Origin, int] | None = None, folded: Mapping[Origin, int] | None = None,
        fenced: Sequence[FencedEvent] = (), promotions: Sequence[Promotion] = (),
        known_promotions: Iterable[tuple[int, str]] | None = None, erased: Sequence[str] = (),
    ) -> None:
        """Atomically upsert ``states``, erase the keys of the sessions ``erased`` lists, move each (topic, partition) from ``expected[tp]`` (absent
        = never stored) to ``offsets[tp]``, raise the source positions to ``sources`` and
        ``folded``, add ``stats``, record ``fenced`` events and ``promotions``. Raises
        :class:`OffsetConflict`, having written nothing, if a stored position is not the expected
        one, and :class:`PromotionsChanged` if ``known_promotions`` (the (epoch, region) of every
        promotion the batch was folded with) is not what the store holds at commit time: a
        promotion recorded meanwhile may fence events of the batch."""
        ...

    def replace_all(
        self, states: Iterable[SessionState], offsets: Mapping[TP, int], stats: Stats,
        sources: Mapping[Origin, int] | None = None, folded: Mapping[Origin, int] | None = None,
    ) -> None:
        """Atomically replace states, positions and counters (loading a snapshot, folding the log
        again): readers see the old content or the new. Promotions and fenced events stay."""
        ...

    def close(self) -> None: ...
