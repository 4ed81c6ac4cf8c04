"""How far a region's dialog state store is behind the session-event logs on its broker.

A region folds its own dialog topic and its copies of the other regions' (mirror/policy.py).
Ends come from the fetch path (:func:`regionsync.kafka.fetch_ends`): tansu's ListOffsets answer
can be far below the real end.

* :meth:`DialogLog.lag`: records on the region's broker the store has not consumed yet, for
  /readyz every few seconds and a promotion's "is this region nearly caught up" check;
* :meth:`DialogLog.caught_up_to`: after a promotion, whether the store has consumed everything
  below the promotion's cut of every other region's log, and all of its own log: the moment the
  new active region may write turns.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Mapping

from confluent_kafka import KafkaException

from dialog.fence import Cut
from dialog.kafka_io import consumer_config
from dialog.store import StateStore
from mirror import policy
from regionsync.kafka import EndsUnknown, fetch_ends, new_consumer
from regionsync.settings import Settings
from serve.errors import NotCaughtUp

TP = tuple[str, int]


class DialogLog:
    def __init__(self, settings: Settings, region: str, store: StateStore) -> None:
        self._settings = settings.for_region(region)
        self._region = region
        self._store = store
        self.topics = policy.inbound_topics(self._settings, region, self._settings.dialog_topic)
        self._consumer = new_consumer(consumer_config(self._settings, f"regionsync-serve-{region}"))
        self._lock = threading.Lock()  # one confluent consumer, many request threads
        self._parts: list[TP] = []
        self._parts_at = float("-inf")

    def partitions(self) -> list[TP]:
        """Every partition of the region's dialog topics (looked up again every 30 s)."""
        with self._lock:
            if time.monotonic() - self._parts_at > 30 or not self._parts:
                meta = self._consumer.list_topics(timeout=5)
                self._parts = [(t, p) for t in self.topics if t in meta.topics and meta.topics[t].error is None
                               for p in sorted(meta.topics[t].partitions)]
                self._parts_at = time.monotonic()
            return list(self._parts)

    def ends(self, timeout_s: float = 5.0) -> dict[TP, int]:
        return fetch_ends(self._settings.kafka(), self.partitions(), timeout_s)

    def lag(self) -> int:
        """Records on this region's broker the store has not consumed yet."""
        try:
            ends = self.ends()
        except (EndsUnknown, KafkaException) as exc:
            raise NotCaughtUp(f"region {self._region}'s broker does not answer: {exc}") from exc
        stored = self._store.offsets()
        return sum(max(0, end - stored.get(tp, 0)) for tp, end in ends.items())

    def missing_below(self, cut: Cut) -> dict[str, dict[int, int]]:
        """Per origin and partition: how far the store's consumed source position is below ``cut``."""
        sources = self._store.sources()
        out: dict[str, dict[int, int]] = {}
        for origin, parts in cut.items():
            for p, offset in parts.items():
                behind = offset - sources.get((origin, p), 0)
                if behind > 0:
                    out.setdefault(origin, {})[p] = behind
        return out

    def caught_up_to(self, cut: Cut) -> bool:
        """The store consumed every record of the others' logs below ``cut``, and all of its own."""
        if self.missing_below(cut):
            return False
        own = [tp for tp in self.partitions() if tp[0] == self._settings.dialog_topic]
        try:
            ends = fetch_ends(self._settings.kafka(), own, 5.0)
        except (EndsUnknown, KafkaException):
            return False
        stored = self._store.offsets()
        return all(stored.get(tp, 0) >= end for tp, end in ends.items())

    def wait_caught_up(self, cut: Cut, timeout_s: float) -> None:
        """Return once :meth:`caught_up_to` holds; raise :class:`NotCaughtUp` after ``timeout_s``."""
        deadline = time.monotonic() + timeout_s
        while not self.caught_up_to(cut):
            if time.monotonic() > deadline:
                missing = self.missing_below(cut)
                raise NotCaughtUp(
                    f"region {self._region}'s dialog state has not folded the log up to its promotion yet "
                    f"(records still to fold per region and partition: {missing or 'its own log'}); "
                    "is its dialog worker running?"
                )
            time.sleep(0.05)

    def positions(self) -> Mapping[TP, int]:
        return self._store.offsets()

    def close(self) -> None:
        self._consumer.close()
