"""The state store in memory: the contract of :mod:`dialog.store` for unit tests and references."""

from __future__ import annotations

import threading
from collections.abc import Iterable, Mapping, Sequence

from dialog.errors import OffsetConflict, PromotionsChanged
from dialog.fence import Promotion
from dialog.keys import MemoryKeyRing
from dialog.state import SessionState
from dialog.store import TP, FencedEvent, Origin, Stats


class MemoryStore:
    def __init__(self, topic: str) -> None:
        self.topic = topic
        self._states: dict[str, SessionState] = {}
        self._offsets: dict[TP, int] = {}
        self._sources: dict[Origin, int] = {}
        self._folded: dict[Origin, int] = {}
        self._stats = Stats()
        self._promotions: dict[tuple[int, str], Promotion] = {}
        self._fenced: dict[tuple[str, int, int], FencedEvent] = {}
        self._lock = threading.Lock()
        self.keyring = MemoryKeyRing()

    def get(self, session_id: str) -> SessionState | None:
        return self._states.get(session_id)

    def all_states(self) -> list[SessionState]:
        return list(self._states.values())

    def count(self) -> int:
        return len(self._states)

    def offsets(self) -> dict[TP, int]:
        return dict(self._offsets)

    def sources(self) -> dict[Origin, int]:
        return dict(self._sources)

    def folded(self) -> dict[Origin, int]:
        return dict(self._folded)

    def stats(self) -> Stats:
        return self._stats

    def promotions(self) -> list[Promotion]:
        return sorted(self._promotions.values(), key=lambda p: p.ballot)

    def record_promotion(self, promo: Promotion) -> None:
        with self._lock:
            self._promotions.setdefault((promo.epoch, promo.region), promo)

    def fenced(self) -> list[FencedEvent]:
        return list(self._fenced.values())

    def is_empty(self) -> bool:
        return not self._states and not self._offsets

    def commit(
        self, states: Iterable[SessionState], offsets: Mapping[TP, int], expected: Mapping[TP, int], stats: Stats,
        *, sources: Mapping[Origin, int] | None = None, folded: Mapping[Origin, int] | None = None,
        fenced: Sequence[FencedEvent] = (), promotions: Sequence[Promotion] = (),
        known_promotions: Iterable[tuple[int, str]] | None = None, erased: Sequence[str] = (),
    ) -> None:
        with self._lock:
            new = {(p.epoch, p.region) for p in promotions}
            if known_promotions is not None and set(known_promotions) | new != set(self._promotions) | new:
                raise PromotionsChanged(f"the store knows promotions {sorted(set(self._promotions) | new)}")
            for tp in offsets:
                if self._offsets.get(tp) != expected.get(tp):
                    raise OffsetConflict(
                        f"{tp[0]}[{tp[1]}]: stored position {self._offsets.get(tp)}, expected {expected.get(tp)}"
                    )
            for state in states:
                self._states[state.session_id] = state
            self._offsets.update(offsets)
            for key, value in (sources or {}).items():
                self._sources[key] = max(self._sources.get(key, 0), value)
            for key, value in (folded or {}).items():
                self._folded[key] = max(self._folded.get(key, 0), value)
            self._stats = self._stats + stats
            for promo in promotions:
                self._promotions.setdefault((promo.epoch, promo.region), promo)
            for ev in fenced:
                self._fenced.setdefault((ev.origin, ev.partition, ev.source_offset), ev)
            self.keyring.erase(erased)

    def replace_all(
        self, states: Iterable[SessionState], offsets: Mapping[TP, int], stats: Stats,
        sources: Mapping[Origin, int] | None = None, folded: Mapping[Origin, int] | None = None,
    ) -> None:
        new = {s.session_id: s for s in states}
        with self._lock:
            self._states, self._offsets, self._stats = new, dict(offsets), stats
            self._sources, self._folded = dict(sources or {}), dict(folded or {})

    def close(self) -> None:
        pass
