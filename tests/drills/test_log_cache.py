"""drills/dialoglog.LogCache on a fake broker: each read fetches only what came since the last
record it received; a stretch a read took for a hole is asked again; a recreated log is read anew."""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from typing import Any

import pytest

from drills import dialoglog
from drills.dialoglog import LogCache
from regionsync.settings import Settings

TP = ("dialog", 0)


class Msg:
    def __init__(self, offset: int) -> None:
        self._offset = offset

    def topic(self) -> str:
        return TP[0]

    def partition(self) -> int:
        return TP[1]

    def offset(self) -> int:
        return self._offset


class Broker:
    """read_to_end's stand-in: the records of TP, some of them not delivered (a false hole)."""

    def __init__(self) -> None:
        self.hidden: set[int] = set()
        self.calls: list[tuple[int, int]] = []  # (start, end) of each read
        self.base = 0  # a recreated log's records are told apart by offset + base

    def read_to_end(self, _kafka: Any, ends: Mapping[tuple[str, int], int], *, start: Mapping[tuple[str, int], int],
                    timeout: float) -> Iterator[Msg]:
        first, end = start.get(TP, 0), ends[TP]
        self.calls.append((first, end))
        for offset in range(first, end):
            if offset not in self.hidden:
                yield Msg(offset)


@pytest.fixture
def broker(monkeypatch: pytest.MonkeyPatch) -> Broker:
    fake = Broker()
    monkeypatch.setattr(dialoglog, "read_to_end", fake.read_to_end)
    return fake


def offsets(records: list[Any]) -> list[int]:
    return [m.offset() for m in records]


def test_each_read_fetches_only_what_came_since(broker: Broker) -> None:
    cache, kafka = LogCache(), Settings().kafka()
    assert offsets(cache.read(kafka, {TP: 5}, 10)) == [0, 1, 2, 3, 4]
    assert offsets(cache.read(kafka, {TP: 8}, 10)) == list(range(8))
    assert offsets(cache.read(kafka, {TP: 8}, 10)) == list(range(8))
    assert broker.calls == [(0, 5), (5, 8), (8, 8)]


def test_a_stretch_taken_for_a_hole_is_asked_again(broker: Broker) -> None:
    cache, kafka = LogCache(), Settings().kafka()
    broker.hidden = {3, 4}  # the broker answered "nothing" there this time
    assert offsets(cache.read(kafka, {TP: 5}, 10)) == [0, 1, 2]
    broker.hidden = set()
    assert offsets(cache.read(kafka, {TP: 6}, 10)) == list(range(6))
    assert broker.calls[-1] == (3, 6)


def test_a_log_shorter_than_what_was_read_is_read_anew(broker: Broker) -> None:
    cache, kafka = LogCache(), Settings().kafka()
    cache.read(kafka, {TP: 6}, 10)
    assert offsets(cache.read(kafka, {TP: 2}, 10)) == [0, 1]
    assert broker.calls[-1] == (0, 2)
