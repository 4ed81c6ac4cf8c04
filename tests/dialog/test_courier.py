"""The key courier (dialog/courier.py) on fake records and in-memory key rings: a batch's session
keys land in the target before its records would, erasures travel instead of erased keys, other
topics are left alone, and a failing ring makes the replicator retry (the error goes up)."""

from __future__ import annotations

from typing import Any

import pytest

from dialog.courier import KeyCourier
from dialog.keys import KeyRing, MemoryKeyRing
from regionsync.settings import Settings


class Record:
    """What the courier reads of a consumed record."""

    def __init__(self, topic: str, key: bytes | None) -> None:
        self._topic, self._key = topic, key

    def topic(self) -> str:
        return self._topic

    def key(self) -> bytes | None:
        return self._key

    def error(self) -> None:
        return None


def courier(source: KeyRing, target: KeyRing) -> tuple[KeyCourier, Settings]:
    settings = Settings(regions=["east", "north"])
    return KeyCourier(settings, "east", "north", rings={"east": source, "north": target}), settings


def test_the_batch_keys_and_erasures_reach_the_target() -> None:
    east, north = MemoryKeyRing(), MemoryKeyRing()
    a = east.create("a", "east")[1]
    east.create("gone", "east")
    east.erase(["gone"])
    east.create("unrelated", "east")
    north.put_many({("gone", "east"): b"g" * 32})  # copied before the erasure
    send, settings = courier(east, north)
    batch: list[Any] = [Record(settings.dialog_topic, b"a"), Record(settings.dialog_topic, b"gone"),
                        Record(settings.chunks_topic, b"unrelated"), Record(settings.dialog_topic, None)]
    send(batch)
    assert north.get_many(["a", "gone", "unrelated"]) == {("a", "east"): a}
    assert north.erased(["gone"]) == {"gone"} and (send.copied, send.erasures) == (1, 1)
    send(batch)  # the batch again (a retry): nothing new
    assert send.copied == 1


def test_a_batch_without_dialog_records_touches_no_database() -> None:
    class Unreachable(MemoryKeyRing):
        def get_many(self, session_ids: Any) -> Any:
            raise AssertionError("no dialog record: no query")

    send, settings = courier(Unreachable(), MemoryKeyRing())
    send([Record(settings.chunks_topic, b"doc-1"), Record(settings.control_topic, b"promotion")])


def test_a_ring_that_fails_fails_the_batch() -> None:
    class Down(MemoryKeyRing):
        def get_many(self, session_ids: Any) -> Any:
            raise ConnectionError("database down")

    send, settings = courier(Down(), MemoryKeyRing())
    with pytest.raises(ConnectionError):
        send([Record(settings.dialog_topic, b"a")])
