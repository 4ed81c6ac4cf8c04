"""How a region indexer holds a batch it cannot apply (fakes only: no broker, no Milvus): it tries
again at a growing pace until the index answers, counts one outage however many attempts it
took, lets anything it does not know propagate, and gives the batch up (uncommitted) on stop."""

from __future__ import annotations

import threading
from typing import Any

import pytest

from indexer.errors import RegionUnavailable
from indexer.worker import RegionIndexer
from regionsync.settings import Settings


def _indexer() -> RegionIndexer:
    fake: Any = object()
    return RegionIndexer(Settings(), "east", sink=fake, consumer=fake, producer=fake,
                         retry_initial_s=0.001, retry_max_s=0.004)


class Flaky:
    def __init__(self, failures: int, error: Exception) -> None:
        self.failures, self.error, self.calls = failures, error, 0

    def __call__(self) -> str:
        self.calls += 1
        if self.calls <= self.failures:
            raise self.error
        return "applied"


def test_an_outage_is_retried_until_the_index_answers_and_counted_once() -> None:
    indexer = _indexer()
    action = Flaky(5, RegionUnavailable("http://milvus", "refused"))
    assert indexer._retry(action, "applying 3 records") == "applied"
    assert action.calls == 6
    assert (indexer.stats.outages, indexer.stats.apply_retries) == (1, 5)


def test_an_unknown_error_propagates_at_once() -> None:
    indexer = _indexer()
    action = Flaky(1, ValueError("a bug, not an outage"))
    with pytest.raises(ValueError):
        indexer._retry(action, "applying")
    assert action.calls == 1 and indexer.stats.apply_retries == 0


def test_a_stop_during_the_pause_gives_the_batch_up() -> None:
    indexer = _indexer()
    indexer.retry_initial_s = indexer.retry_max_s = 30.0  # it would wait long: the stop must cut it
    action = Flaky(10**6, RegionUnavailable("http://milvus", "down"))
    threading.Timer(0.2, indexer.stop).start()
    assert indexer._retry(action, "applying") is None
    assert action.calls == 1
