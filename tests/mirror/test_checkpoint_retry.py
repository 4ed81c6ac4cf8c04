"""A replicator whose target database is away keeps its checkpoint and writes it once the database
answers; a stop while it waits drops it (the next run copies the batch again: duplicates, not a
gap). Fakes only: the retry itself, without a database."""

from __future__ import annotations

import threading
from typing import Any

from mirror.replicator import Replicator


class FlakyStore:
    def __init__(self, failures: int) -> None:
        self.failures, self.calls, self.saved = failures, 0, []  # type: ignore[var-annotated]

    def save(self, checkpoints: dict[Any, Any]) -> None:
        self.calls += 1
        if self.calls <= self.failures:
            raise OSError("connection refused: the database system is starting up")
        self.saved.append(checkpoints)


class Part:
    def __init__(self, offset: int) -> None:
        self.offset = offset

    def checkpoint(self) -> int:
        return self.offset


def replicator(store: FlakyStore) -> Any:
    rep: Any = object.__new__(Replicator)  # only what _save touches
    rep.store, rep.stopping, rep.source, rep.target = store, threading.Event(), "east", "north"
    return rep


def test_the_checkpoint_is_written_once_the_database_answers() -> None:
    store = FlakyStore(failures=2)
    rep = replicator(store)
    rep._save({("t", 0): Part(41)})
    assert store.calls == 3 and store.saved == [{("t", 0): 41}]


def test_a_stop_while_the_database_is_away_gives_the_checkpoint_up() -> None:
    store = FlakyStore(failures=10**6)
    rep = replicator(store)
    threading.Timer(0.5, rep.stopping.set).start()
    rep._save({("t", 0): Part(7)})  # returns: neither hangs nor raises
    assert store.saved == [] and store.calls >= 2
