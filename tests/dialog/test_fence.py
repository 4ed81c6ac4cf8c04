"""Fencing without a shared database (dialog/fence.py) and the merge of a region's logs
(dialog/worker.py ``Merger``), pure: promotions, ballots, cuts, what a cut sets aside, when a
store must fold again, and the order a session's events are folded in across logs."""

from __future__ import annotations

import random
from dataclasses import dataclass
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from dialog import fence
from dialog.events import SessionStarted, UserUtterance, encode, key_of
from dialog.fence import Ballot, Promotion
from dialog.fold import Fold
from dialog.merge import Merger
from dialog.reducer import fold
from mirror.provenance import copy_headers

REGIONS = ["east", "north", "west"]


def test_before_any_promotion_the_source_region_writes_at_epoch_one() -> None:
    assert fence.active([], "east") == Promotion(1, "east")
    assert fence.next_epoch([], "east") == 2


def test_the_highest_ballot_wins_and_a_tie_of_epochs_is_broken_by_name() -> None:
    a, b = Promotion(2, "north", "east"), Promotion(3, "east", "north")
    assert fence.active([a, b], "east") is b
    # Two regions cut off from each other both promoted themselves to epoch 4: all agree on one.
    x, y = Promotion(4, "north", "east"), Promotion(4, "west", "east")
    assert fence.active([x, y], "east") == fence.active([y, x], "east") == y
    assert Ballot(4, "west") > Ballot(4, "north") > Ballot(3, "west")


def test_a_promotion_round_trips_through_its_control_record() -> None:
    promo = Promotion(7, "north", "east", {"east": {0: 12, 3: 0}, "west": {}}, 1_700_000_000_000)
    assert Promotion.from_json(promo.to_json()) == promo
    assert promo.key() == b"promotion:7:north"


@pytest.mark.parametrize("raw", [b"not json", b"[]", b'{"type": "heartbeat"}', b'{"type": "promotion", "epoch": 0, '
                                 b'"region": "x", "cut": {}}', b'{"type": "promotion", "epoch": 2, "cut": {}}'])
def test_a_control_record_that_is_not_a_promotion_says_why(raw: bytes) -> None:
    with pytest.raises(ValueError):
        Promotion.from_json(raw)


def test_the_cut_is_what_the_promoted_region_had_received_of_every_other_region() -> None:
    received = {("east", 0): 10, ("east", 1): 4, ("north", 0): 99}
    assert fence.cut_of(received, "north", REGIONS) == {"east": {0: 10, 1: 4}, "west": {}}


def test_an_older_epochs_event_at_or_past_the_cut_is_set_aside() -> None:
    promo = Promotion(2, "north", "east", {"east": {0: 10}})
    old = Ballot(1, "east")
    assert fence.fenced_by([promo], "east", 0, 9, old) is None  # received before the promotion
    assert fence.fenced_by([promo], "east", 0, 10, old) is promo  # not received: set aside
    assert fence.fenced_by([promo], "east", 1, 0, old) is promo  # a partition it had nothing of
    assert fence.fenced_by([promo], "east", 0, 50, Ballot(3, "east")) is None  # east promoted again later
    assert fence.fenced_by([promo], "north", 0, 50, Ballot(2, "north")) is None  # the new writer itself
    assert fence.fenced_by([promo], "west", 0, 50, old) is None  # a region the promotion did not know


def test_a_store_that_folded_past_a_cut_must_fold_again() -> None:
    promo = Promotion(2, "north", "east", {"east": {0: 10, 1: 5}})
    assert fence.tainted(promo, {("east", 0): 10, ("east", 1): 5}) == []
    assert fence.tainted(promo, {("east", 0): 11, ("east", 1): 5, ("north", 0): 80}) == [("east", 0)]


@given(st.lists(st.tuples(st.sampled_from(REGIONS), st.integers(1, 6)), max_size=20))
def test_any_set_of_promotions_names_exactly_one_writer(promos: list[tuple[str, int]]) -> None:
    known = [Promotion(e, r) for r, e in promos]
    top = fence.active(known, "east")
    assert all(p.ballot <= top.ballot for p in known)
    assert [r for r in REGIONS if r == top.region] == [top.region]


# ---------------------------------------------------------------------------- folding across logs


@dataclass
class Rec:
    """A consumed record (what the worker reads from confluent-kafka)."""

    t: str
    p: int
    o: int
    k: bytes | None
    v: bytes | None
    h: Any = None

    def topic(self) -> str:
        return self.t

    def partition(self) -> int:
        return self.p

    def offset(self) -> int:
        return self.o

    def key(self) -> bytes | None:
        return self.k

    def value(self) -> bytes | None:
        return self.v

    def headers(self) -> Any:
        return self.h

    def error(self) -> None:
        return None


def events(sid: str, first: int, last: int, origin: str, epoch: int) -> list[Any]:
    out: list[Any] = []
    for seq in range(first, last + 1):
        cls = SessionStarted if seq == 1 else UserUtterance
        extra = {} if seq == 1 else {"text": f"{origin}-{seq}"}
        out.append(cls(session_id=sid, seq=seq, event_id=f"{sid}-{seq}-{origin}", ts_ms=seq, origin=origin,
                       epoch=epoch, **extra))
    return out


def records(topic: str, evs: list[Any], source: str | None = None) -> list[Rec]:
    out = []
    for i, e in enumerate(evs):
        headers = copy_headers(None, source, "dialog", 0, i) if source else None
        out.append(Rec(topic, 0, i, key_of(e), encode(e), headers))
    return out


def test_the_merge_folds_a_session_in_order_whichever_log_arrives_first() -> None:
    """North's log holds a session's continuation (epoch 2); the copy of east's holds its start
    (epoch 1). Read in any interleaving, the merge folds east's events first."""
    start = events("s", 1, 4, "east", 1)
    cont = events("s", 5, 7, "north", 2)
    east_copy = records("east.dialog", start, source="east")
    local = records("dialog", cont)
    for seed in range(20):
        rng = random.Random(seed)
        merger = Merger()
        queue_a, queue_b = list(east_copy), list(local)
        order = []
        while queue_a or queue_b:
            src = queue_a if (queue_a and (not queue_b or rng.random() < 0.5)) else queue_b
            merger.add(src.pop(0))  # type: ignore[arg-type]
            fetched = {"east.dialog": len(east_copy) - len(queue_a), "dialog": len(local) - len(queue_b)}

            def at_end(tp: tuple[str, int], fetched: dict[str, int] = fetched) -> bool:
                return fetched[tp[0]] >= {"east.dialog": len(east_copy), "dialog": len(local)}[tp[0]]

            order += merger.take([("dialog", 0), ("east.dialog", 0)], at_end)
        folded = Fold("north", ["east", "north"], [], {}, {})
        for msg, event in order:
            folded.event(msg, event)
        assert folded.touched["s"] == fold(start + cont)["s"], seed
        assert folded.outcomes.get("gap", 0) == 0 and folded.outcomes.get("late", 0) == 0


def test_a_log_that_may_still_hold_an_earlier_epoch_holds_the_merge_back() -> None:
    merger = Merger()
    for rec in records("dialog", events("s", 5, 6, "north", 2)):
        merger.add(rec)  # type: ignore[arg-type]
    # The copy of east's log has not been fetched to its end yet: nothing may be folded.
    assert merger.take([("dialog", 0), ("east.dialog", 0)], lambda tp: tp[0] == "dialog") == []
    # Once it is at its end (nothing earlier there), north's records go.
    assert len(merger.take([("dialog", 0), ("east.dialog", 0)], lambda tp: True)) == 2


def test_events_past_a_promotions_cut_are_set_aside_and_the_rest_folded() -> None:
    start = events("s", 1, 6, "east", 1)
    promo = Promotion(2, "north", "east", {"east": {0: 4}})  # north had received offsets 0..3
    f = Fold("north", ["east", "north"], [promo], {}, {})
    for rec in records("east.dialog", start, source="east"):
        f.event(rec)  # type: ignore[arg-type]
    assert f.touched["s"] == fold(start[:4])["s"]
    assert [(e.seq, e.fenced_epoch, e.fenced_region) for e in f.fenced] == [(5, 2, "north"), (6, 2, "north")]
    assert f.stats().fenced == 2 and f.sources == {("east", 0): 6} and f.folded == {("east", 0): 4}
