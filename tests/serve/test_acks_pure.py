"""Mirrored acknowledgements without a stack: the in-sync set (serve/acks.py ``InSync``) and the
waiting logic with a fake peer (what each region's checkpoint holds is a dict the test moves).

The rule under test: a turn told to a customer is held by ``mirrored_min_insync_regions`` regions,
or it is refused (before anything is published when the set is already too small, after the
append when a needed region times out); only the region this one was promoted over is excused,
and only until it is in sync again."""

from __future__ import annotations

import pytest

from regionsync.settings import Settings
from serve.acks import InSync, MirroredAcks, holds
from serve.errors import NotInSync


def test_holds_needs_every_partition_past_the_offset() -> None:
    assert holds({0: 5, 1: 3}, {0: 4, 1: 2})
    assert not holds({0: 5, 1: 3}, {0: 5})
    assert not holds({0: 5}, {1: 0})  # a partition never copied holds nothing
    assert holds({}, {})


def test_two_regions_need_the_standby_unless_it_is_excused() -> None:
    s = InSync("east", ("north",), min_insync=2)
    assert s.needed() == 2 and s.shortfall() is None
    s.leave("north", 1.0)
    assert s.members() == ["east"]
    assert s.shortfall() is not None and "north" in s.shortfall()  # type: ignore[operator]
    s.excuse("north")  # east was promoted over north: north is the lost region
    assert s.needed() == 1 and s.shortfall() is None
    s.rejoin("north")  # in sync again: the excuse ends with it
    assert s.excused == set() and s.needed() == 2
    s.leave("north", 2.0)
    assert s.shortfall() is not None


def test_an_excuse_for_a_region_in_sync_ends_when_it_confirms() -> None:
    s = InSync("north", ("east",), min_insync=2)
    s.excuse("east")
    s.confirmed("east")
    s.leave("east", 1.0)
    assert s.shortfall() is not None


def test_min_insync_one_acknowledges_alone_and_three_regions_tolerate_one_out() -> None:
    alone = InSync("east", ("north",), min_insync=1)
    alone.leave("north", 1.0)
    assert alone.shortfall() is None
    three = InSync("east", ("north", "west"), min_insync=2)
    three.leave("north", 1.0)
    assert three.shortfall() is None
    three.leave("west", 1.0)
    assert three.shortfall() is not None
    big = InSync("east", ("north",), min_insync=5)  # more than there are regions: all of them
    assert big.needed() == 2
    assert InSync("east", ("north",), min_insync=2, excused={"west"}).needed() == 2  # not a peer: no effect
    odd = InSync("east", ("north",), min_insync=2)
    odd.excuse("west")
    assert odd.excused == set()


class Peer:
    """What the fake north's checkpoint holds; ``None`` = its database does not answer."""

    def __init__(self) -> None:
        self.next: dict[int, int] | None = {}

    def __call__(self, _peer: str, _timeout: float) -> dict[int, int] | None:
        return None if self.next is None else dict(self.next)


def _acks(min_insync: int = 2) -> tuple[MirroredAcks, Peer]:
    settings = Settings().model_copy(update={"mirrored_ack_timeout_s": 0.2,
                                             "mirrored_min_insync_regions": min_insync})
    peer = Peer()
    return MirroredAcks(settings, "east", copied=peer), peer


def test_a_turn_the_standby_holds_is_acknowledged() -> None:
    acks, peer = _acks()
    peer.next = {0: 8}
    acks.admit()
    assert acks.wait([(0, 7)]) < 0.2
    assert acks.out_of_sync == {}


def test_a_standby_that_does_not_confirm_makes_the_turn_refused_after_the_append_and_the_next_before(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    acks, peer = _acks()
    peer.next = {0: 3}
    with pytest.raises(NotInSync, match="not acknowledged"):
        acks.wait([(0, 7)])  # north holds offsets below 3 only: it times out, the turn is not told
    assert list(acks.out_of_sync) == ["north"]
    with pytest.raises(NotInSync, match="refuses turns"):
        acks.admit()  # nothing is published while the set is too small
    peer.next = {0: 8}  # north caught up with everything written (offset 7 included)
    monkeypatch.setattr("serve.acks.RECHECK_S", 0.0)
    acks.admit()
    assert acks.out_of_sync == {}


def test_a_standby_behind_what_was_written_stays_out_until_it_holds_it_all(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("serve.acks.RECHECK_S", 0.0)
    acks, peer = _acks()
    peer.next = None  # its database is down
    with pytest.raises(NotInSync):
        acks.wait([(0, 10)])
    peer.next = {0: 10}  # back, but offset 10 not copied yet
    with pytest.raises(NotInSync):
        acks.admit()
    peer.next = {0: 11}
    acks.admit()


def test_the_region_promoted_over_is_excused_and_waited_for_again_once_back(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("serve.acks.RECHECK_S", 0.0)
    acks, peer = _acks()
    acks.excuse("north")
    peer.next = None  # the lost region
    assert acks.wait([(0, 4)]) < 0.2  # acknowledged without it: the failover can take turns
    acks.admit()
    peer.next = {0: 5}  # the failback: north caught up
    acks.admit()
    assert acks.status()["excused"] == [] and acks.status()["in_sync"] == ["east", "north"]
    peer.next = {0: 5}
    with pytest.raises(NotInSync):  # from now on it is needed like any standby
        acks.wait([(0, 6)])


def test_min_insync_one_acknowledges_without_the_standby() -> None:
    acks, peer = _acks(min_insync=1)
    peer.next = {}
    acks.wait([(0, 1)])  # north times out and leaves; east alone is enough
    assert list(acks.out_of_sync) == ["north"]
    acks.admit()
    assert acks.status()["turns_refused"] is None


def test_status_reports_the_set_and_why_turns_are_refused() -> None:
    acks, peer = _acks()
    peer.next = None
    with pytest.raises(NotInSync):
        acks.wait([(0, 1)])
    st = acks.status()
    assert st["in_sync"] == ["east"] and st["needed"] == 2 and st["out_of_sync"] == ["north"]
    assert "need 2 regions" in st["turns_refused"]
