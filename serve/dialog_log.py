"""How far a region's dialog state store is behind the session-event log.

Two measures, because tansu's high-water mark can be lower than the real end (the last batch's
base offset + 1; see shared/STACK.md and dialog/worker.py):

* :meth:`DialogLog.lag` compares the store's positions with the reported high-water marks: cheap,
  a lower bound, good enough for /readyz every few seconds;
* :meth:`DialogLog.wait_caught_up` is exact: it reads the log from the store's positions and
  counts as caught up only when nothing is there (several empty polls in a row). A promotion
  uses it after the flip, when nobody may append any more, so "the end" is fixed.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Mapping

from confluent_kafka import Consumer, TopicPartition

from dialog.kafka_io import consumer_config, partitions_of
from regionsync.settings import Settings
from serve.errors import NotCaughtUp

Positions = Callable[[], Mapping[int, int]]  # the store's next offsets per partition


class DialogLog:
    def __init__(self, settings: Settings, region: str, positions: Positions) -> None:
        self._settings = settings
        self._topic = settings.dialog_topic
        self._positions = positions
        self._consumer = Consumer(consumer_config(settings, f"regionsync-serve-{region}"))
        self._lock = threading.Lock()  # one confluent consumer, many request threads

    def lag(self) -> int:
        """Records on the log the store has not folded yet (lower bound on tansu)."""
        with self._lock:
            parts = partitions_of(self._consumer, self._topic)
            stored = self._positions()
            total = 0
            for p in parts:
                low, high = self._consumer.get_watermark_offsets(TopicPartition(self._topic, p), timeout=5, cached=False)
                total += max(0, high - stored.get(p, low))
            return total

    def behind(self) -> int:
        """Records found on the log at or past the store's positions (exact; reads the log)."""
        stored = self._positions()
        with self._lock:
            parts = partitions_of(self._consumer, self._topic)
            reader = Consumer(consumer_config(self._settings, "regionsync-serve-reader"))
        try:
            reader.assign([TopicPartition(self._topic, p, stored.get(p, 0)) for p in parts])
            found = idle = 0
            while idle < self._settings.dialog_idle_polls:
                msgs = [m for m in reader.consume(500, self._settings.dialog_poll_timeout_s) if m.error() is None]
                found += len(msgs)
                idle = 0 if msgs else idle + 1
                if found:
                    break
            return found
        finally:
            reader.close()

    def wait_caught_up(self, timeout_s: float) -> None:
        """Return once the store holds every record of the log; raise :class:`NotCaughtUp`."""
        deadline = time.monotonic() + timeout_s
        while True:
            missing = self.behind()
            if not missing:
                return
            if time.monotonic() > deadline:
                raise NotCaughtUp(
                    f"dialog state is still behind the log after {timeout_s:.0f}s (is the region's dialog worker running?)"
                )
            time.sleep(0.2)

    def close(self) -> None:
        self._consumer.close()
