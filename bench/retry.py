"""Transient errors in the bench's own probes: retried within a bounded budget, and counted.

The bench measures a stack that it loads to its limit on a small machine; its probes (a Milvus
client of a freshness prober, a read of a region group's committed offsets, a check of what a
region holds) then sometimes meet a server that is busy building an index or a connection that
is refused for a moment. Such an error says nothing about the pipeline, so the probe is tried
again, a bounded number of times with a growing pause; every retry is counted per probe and the
counts go into the report, so a run that needed many is visible as such. When the budget is
spent the error propagates, and the row that made the call fails (see runner.py), not the run.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from typing import TypeVar

from tenacity import RetryCallState, Retrying, stop_after_attempt, wait_exponential

log = logging.getLogger(__name__)

T = TypeVar("T")


class Retries:
    def __init__(self, attempts: int = 6, first_pause_s: float = 0.5, max_pause_s: float = 5.0,
                 sleep: Callable[[float], None] = time.sleep) -> None:
        if attempts < 1:
            raise ValueError("attempts must be >= 1")
        self.attempts = attempts
        self.first_pause_s = first_pause_s
        self.max_pause_s = max_pause_s
        self._sleep = sleep
        self._lock = threading.Lock()
        self._retried: dict[str, int] = {}
        self._gave_up: dict[str, int] = {}

    def call(self, what: str, fn: Callable[[], T]) -> T:
        """``fn()``, tried up to ``attempts`` times; raises the last error when all failed."""
        def retrying(state: RetryCallState) -> None:
            self.note(what)
            exc = state.outcome.exception() if state.outcome is not None else None
            log.info("bench probe %s failed (attempt %d of %d), retrying in %.1fs: %s: %s", what,
                     state.attempt_number, self.attempts, state.upcoming_sleep, type(exc).__name__, exc)

        try:
            return Retrying(stop=stop_after_attempt(self.attempts), reraise=True, sleep=self._sleep,
                            wait=wait_exponential(multiplier=self.first_pause_s, max=self.max_pause_s),
                            before_sleep=retrying)(fn)
        except Exception:
            with self._lock:
                self._gave_up[what] = self._gave_up.get(what, 0) + 1
            raise

    def note(self, what: str) -> None:
        """Count a failure that the caller retries in its own loop (e.g. a prober's next round)."""
        with self._lock:
            self._retried[what] = self._retried.get(what, 0) + 1

    @property
    def total(self) -> int:
        with self._lock:
            return sum(self._retried.values())

    def to_dict(self) -> dict[str, object]:
        with self._lock:
            return {"total": sum(self._retried.values()), "by_probe": dict(sorted(self._retried.items())),
                    "gave_up": dict(sorted(self._gave_up.items()))}
