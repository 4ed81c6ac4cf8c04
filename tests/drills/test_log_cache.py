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


class Store:
    """PostgresStore's stand-in for fold_region: no promotions, no keys."""

    keyring = None

    def promotions(self) -> list[Any]:
        return []

    def close(self) -> None:
        pass


def test_a_fold_is_reused_while_its_records_promotions_and_keys_stay_the_same(
        monkeypatch: pytest.MonkeyPatch) -> None:
    ends: dict[tuple[str, int], int] = {TP: 3}
    folds: list[str] = []
    real_fold = dialoglog.Fold

    def counting_fold(region: str, *args: Any, **kwargs: Any) -> Any:
        folds.append(region)
        return real_fold(region, *args, **kwargs)

    monkeypatch.setattr(dialoglog, "read_all", lambda *_a, **_k: ([], dict(ends)))
    monkeypatch.setattr(dialoglog.PostgresStore, "for_region", staticmethod(lambda *_a: Store()))
    monkeypatch.setattr(dialoglog, "keys_for", lambda *_a: {})
    monkeypatch.setattr(dialoglog, "Fold", counting_fold)
    settings, cache = Settings(), LogCache()
    first = dialoglog.fold_region(settings, "east", cache=cache)
    assert dialoglog.fold_region(settings, "east", cache=cache) is first and folds == ["east"]
    ends[TP] = 4  # a record came: folded again
    assert dialoglog.fold_region(settings, "east", cache=cache) is not first and folds == ["east", "east"]
    dialoglog.fold_region(settings, "north", cache=cache)  # each region its own
    dialoglog.fold_region(settings, "east")  # no cache: always folded
    assert folds == ["east", "east", "north", "east"]
