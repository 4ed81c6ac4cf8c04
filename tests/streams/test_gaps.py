"""Offsets the change agent's fetch stepped over (streams/gaps.py): found, read again, put back in
order; a hole the broker never serves is skipped after the wait, counted, and holds nothing up."""

from __future__ import annotations

from collections.abc import Sequence

import pytest
from prometheus_client import REGISTRY

from streams.gaps import Gaps, holes, refill
from streams.processor import RawMessage

CDC, CMS = "cms.public.documents", "cms.documents"


def msg(topic: str, partition: int, offset: int) -> RawMessage:
    return RawMessage(topic=topic, partition=partition, offset=offset, key=f"k{offset}".encode(),
                      value=f"{topic}/{partition}/{offset}".encode())


class Reader:
    """Serves each record from its ``ready``-th fetch on (a batch object still being written);
    offsets in ``never`` are holes."""

    def __init__(self, ready: int = 1, never: Sequence[int] = ()) -> None:
        self.ready, self.never, self.calls = ready, set(never), 0

    def fetch(self, coordinates: Sequence[tuple[str, int, int]]) -> dict[tuple[str, int, int], tuple[bytes | None, bytes | None]]:
        self.calls += 1
        if self.calls < self.ready:
            return {}
        return {c: (f"k{c[2]}".encode(), f"{c[0]}/{c[1]}/{c[2]}".encode()) for c in coordinates if c[2] not in self.never}


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now

    def sleep(self, s: float) -> None:
        self.now += s


def test_a_jump_within_a_partition_is_a_hole_and_other_partitions_are_apart() -> None:
    expected: dict[tuple[str, int], int] = {}
    assert holes([msg(CDC, 0, 5), msg(CDC, 1, 40)], expected) == []  # the first records: nothing known before
    assert holes([msg(CDC, 0, 6), msg(CDC, 0, 9), msg(CDC, 1, 41), msg(CMS, 0, 3)], expected) == [
        (CDC, 0, 7), (CDC, 0, 8)]
    assert expected == {(CDC, 0): 10, (CDC, 1): 42, (CMS, 0): 4}


def test_a_redelivery_is_not_a_hole_and_does_not_move_the_position_back() -> None:
    expected = {(CDC, 0): 10}
    assert holes([msg(CDC, 0, 4), msg(CDC, 0, 5)], expected) == []
    assert expected == {(CDC, 0): 10}
    assert holes([msg(CDC, 0, 10)], expected) == []


def test_the_records_read_again_go_back_in_front_of_their_partitions_next_record() -> None:
    batch = [msg(CDC, 0, 130), msg(CMS, 0, 7), msg(CDC, 0, 133), msg(CDC, 0, 134)]
    clock = Clock()
    reader = Reader(ready=3)  # the 10 MB batch object is served from the third try on
    out = refill(batch, [(CDC, 0, 131), (CDC, 0, 132)], reader, clock=clock, sleep=clock.sleep)
    assert [(m.topic, m.offset) for m in out] == [(CDC, 130), (CMS, 7), (CDC, 131), (CDC, 132), (CDC, 133), (CDC, 134)]
    assert out[2].value == f"{CDC}/0/131".encode() and out[2].key == b"k131"
    assert reader.calls == 3


def test_an_offset_never_served_is_skipped_after_the_wait_and_counted() -> None:
    def skipped() -> float:
        return REGISTRY.get_sample_value("regionsync_change_offsets_skipped_total") or 0.0

    before = skipped()
    clock = Clock()
    batch = [msg(CDC, 0, 10), msg(CDC, 0, 13)]
    out = refill(batch, [(CDC, 0, 11), (CDC, 0, 12)], Reader(never=[12]), wait_s=5.0, clock=clock, sleep=clock.sleep)
    assert [m.offset for m in out] == [10, 11, 13]
    assert skipped() - before == 1
    assert clock.now == pytest.approx(5.0, abs=0.3)


def test_a_failing_reader_raises_so_the_batch_is_retried() -> None:
    class Broken:
        def fetch(self, coordinates: Sequence[tuple[str, int, int]]) -> dict[tuple[str, int, int], tuple[bytes | None, bytes | None]]:
            raise RuntimeError("broker down")

    with pytest.raises(RuntimeError):
        refill([msg(CDC, 0, 3)], [(CDC, 0, 2)], Broken())


def test_a_rebalance_forgets_the_positions_so_a_partition_moved_on_elsewhere_is_no_hole() -> None:
    gaps = Gaps(Reader())
    assert gaps.find([msg(CDC, 0, 5)]) == []
    assert gaps.find([msg(CDC, 0, 7)]) == [(CDC, 0, 6)]
    gaps.forget(object(), {(CDC, 0)}, signal=None)  # how Faust's signals call their receivers
    assert gaps.find([msg(CDC, 0, 40)]) == []
    assert [m.offset for m in gaps.mend([msg(CDC, 0, 42)], [(CDC, 0, 41)])] == [41, 42]
