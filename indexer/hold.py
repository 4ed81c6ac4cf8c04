"""How a region indexer holds a batch it cannot apply: it tries the same batch again, at a growing
pace, until it is applied or the worker stops. Nothing is skipped or committed meanwhile, so a
Milvus outage (or a broker that refuses the dead-letter write) costs time, never a record. An
outage is counted and logged once, when it starts, and once when it ends."""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from typing import Any, Protocol

from confluent_kafka import KafkaException
from tenacity import RetryCallState, Retrying, retry_if_exception_type, wait_exponential

from indexer.errors import IndexerError, RegionUnavailable

log = logging.getLogger(__name__)


class HoldStats(Protocol):
    outages: int
    apply_retries: int


class _Stopped(Exception):
    """The worker was asked to stop while it waited to try a batch again."""


def hold(action: Callable[[], Any], what: str, *, stage: str, stats: HoldStats, stop: threading.Event,
         clock: Callable[[], float], initial_s: float, max_s: float) -> Any:
    """``action()``'s result (True for None) once it succeeds; None if ``stop`` was set while
    waiting. Errors other than an unavailable region, an indexer error or a Kafka error propagate."""
    outage_started: list[float] = []  # when this call first found Milvus unavailable

    def failed(state: RetryCallState) -> None:
        exc = state.outcome.exception() if state.outcome is not None else None
        stats.apply_retries += 1
        if isinstance(exc, RegionUnavailable):
            if not outage_started:
                outage_started.append(clock())
                stats.outages += 1
                log.warning("%s: region Milvus unavailable (%s); holding the batch (%s), offsets not committed, "
                            "retrying until it answers", stage, exc.detail, what)
        else:
            # Not an outage we recognise (Milvus rejected a call, the broker refused the DLQ
            # write...): still never skip the batch; log every attempt, at a slowing pace.
            log.error("%s: %s failed (attempt %d): %s", stage, what, state.attempt_number, exc)

    def pause(seconds: float) -> None:
        if stop.wait(seconds):
            raise _Stopped

    try:
        result = Retrying(
            retry=retry_if_exception_type((RegionUnavailable, IndexerError, KafkaException)),
            wait=wait_exponential(multiplier=initial_s, max=max_s), sleep=pause, before_sleep=failed,
        )(action)
    except _Stopped:
        log.info("%s: stopping with an unapplied batch; it will be redelivered", stage)
        return None
    if outage_started:
        log.info("%s: region Milvus back after %.1fs; %s done", stage, clock() - outage_started[0], what)
    return result if result is not None else True
