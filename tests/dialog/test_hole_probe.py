"""HoleProbe: a log whose fetch stopped below its end is at its end only when nothing is there.

A tansu killed in the middle of a write can come back with a log's end past its last record; a
standby's worker then waited forever to merge that partition number (seen in a region-scope
drill: the failed region's own dialog log ended one offset past its last record)."""

from __future__ import annotations

from dialog.logcheck import HoleProbe
from regionsync.kafka import NoAnswer

TP = ("regionsync.dialog.events", 0)


class Reader:
    def __init__(self, records: dict[int, tuple[bytes | None, bytes | None]]) -> None:
        self.records = records
        self.asked: list[int] = []

    def watermarks(self, topic: str, partition: int) -> tuple[int, int] | None:
        return 0, 99

    def record_at(self, topic: str, partition: int, offset: int) -> tuple[bytes | None, bytes | None] | None:
        self.asked.append(offset)
        return self.records.get(offset)


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def test_a_log_stuck_below_its_end_with_nothing_there_is_at_its_end_after_the_wait() -> None:
    reader, clock = Reader({}), Clock()
    probe = HoleProbe(reader, clock, wait_s=2.0)
    assert probe.hole(TP, 36, 37) is False  # just stopped: the fetch may still bring it
    clock.now += 1.0
    assert probe.hole(TP, 36, 37) is False and reader.asked == []
    clock.now += 1.5
    assert probe.hole(TP, 36, 37) is True and reader.asked == [36]
    assert probe.hole(TP, 36, 37) is True and reader.asked == [36]  # remembered, not probed again
    assert probe.known(TP, 36, 37) and probe.known(TP, 30, 37)
    assert not probe.known(TP, 36, 38)  # the end moved: not known any more


def test_a_record_found_there_is_left_to_the_fetch() -> None:
    reader, clock = Reader({36: (b"k", b"v")}), Clock()
    probe = HoleProbe(reader, clock, wait_s=2.0)
    probe.hole(TP, 36, 37)
    clock.now += 3.0
    assert probe.hole(TP, 36, 37) is False and reader.asked == [36]
    clock.now += 1.0  # the wait starts again after a probe that found a record
    assert probe.hole(TP, 36, 37) is False and reader.asked == [36]


def test_a_moved_position_or_end_starts_the_wait_again_and_clear_forgets() -> None:
    reader, clock = Reader({}), Clock()
    probe = HoleProbe(reader, clock, wait_s=2.0)
    probe.hole(TP, 36, 37)
    clock.now += 3.0
    assert probe.hole(TP, 36, 38) is False  # a new end: wait again
    clock.now += 3.0
    assert probe.hole(TP, 36, 38) is True
    probe.clear(TP)
    assert not probe.known(TP, 36, 38)


def test_without_a_reader_nothing_is_a_hole() -> None:
    clock = Clock()
    probe = HoleProbe(None, clock, wait_s=0.0)
    clock.now += 10
    assert probe.hole(TP, 1, 2) is False


class SlowReader(Reader):
    """A broker that does not answer (busy, frozen): the probe cannot tell what is there."""

    def record_at(self, topic: str, partition: int, offset: int) -> tuple[bytes | None, bytes | None] | None:
        self.asked.append(offset)
        raise NoAnswer("the broker answered 0 fetches in 10s")


def test_a_broker_that_does_not_answer_is_no_hole_and_is_asked_again_after_another_wait() -> None:
    reader, clock = SlowReader({}), Clock()
    probe = HoleProbe(reader, clock, wait_s=2.0)
    probe.hole(TP, 36, 99)
    clock.now += 3.0
    assert probe.hole(TP, 36, 99) is False and reader.asked == [36]
    clock.now += 1.0
    assert probe.hole(TP, 36, 99) is False and reader.asked == [36]  # not hammered
    clock.now += 1.5
    assert probe.hole(TP, 36, 99) is False and reader.asked == [36, 36]


def test_a_slow_broker_is_never_judged_a_recreated_log() -> None:
    from dialog.logcheck import find_moved

    moved = find_moved(SlowReader({}), [TP], {TP: 50}, {}, lambda: set())
    assert moved == []  # judged later, when the broker answers
