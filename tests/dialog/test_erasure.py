"""Erasure of a session (right to be forgotten): the reducer's tombstone, the fold without keys,
the manager's erase, and the key ring's contract (in memory and on a region's real Postgres)."""

from __future__ import annotations

import itertools
import random
import threading
from collections.abc import Iterator

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from dialog import sealing
from dialog.events import DialogEvent, SessionErased, UserUtterance, decode_opened, encode, key_of
from dialog.keys import KeyRing, MemoryKeyRing, PostgresKeyRing, SessionIsErased, lookup
from dialog.loadgen import conversation, interleave
from dialog.manager import DialogManager, MemoryPublisher
from dialog.memory_store import MemoryStore
from dialog.reducer import Outcome, fold, step
from dialog.state import ERASED, SessionState
from dialog.store import Stats
from regionsync.pgdb import region_dsn
from regionsync.settings import Settings


def erasure(sid: str, seq: int, eid: str = "", region: str = "east") -> SessionErased:
    return SessionErased(session_id=sid, seq=seq, event_id=eid or f"{sid}-erase", ts_ms=9_000 + seq, origin=region,
                         reason="ticket 7")


def conversations(n: int, seed: int) -> list[list[DialogEvent]]:
    rng = random.Random(seed)
    return [conversation(f"s{i}", rng, turns=2) for i in range(n)]


@settings(max_examples=200, deadline=None)
@given(seed=st.integers(0, 10_000), cut=st.integers(0, 40), after=st.integers(0, 5))
def test_the_tombstone_depends_on_the_erasure_alone(seed: int, cut: int, after: int) -> None:
    """Whatever a region folded of the session before the erasure (all, part, nothing) and
    whatever comes after it, the session ends the same tombstone; other sessions are untouched."""
    convs = conversations(3, seed)
    target, others = convs[0], convs[1:]
    gone = erasure("s0", seq=len(target) + 1)
    late = [UserUtterance(session_id="s0", seq=len(target) + 2 + i, event_id=f"late-{i}", ts_ms=1, origin="north",
                          text="after the erasure") for i in range(after)]
    full = fold([*interleave([target, *others], random.Random(seed)), gone, *late])
    partial = fold([*target[: min(cut, len(target))], gone, *late])
    assert full["s0"] == partial["s0"] == SessionState(session_id="s0", status=ERASED, last_seq=gone.seq,
                                                       updated_ms=gone.ts_ms, origin="east",
                                                       recent=((gone.seq, gone.event_id),))
    assert full["s0"].turns == () and full["s0"].slots == {} and full["s0"].customer_id == ""
    assert {sid: s for sid, s in full.items() if sid != "s0"} == fold([e for c in others for e in c])


def test_an_erasure_applies_whatever_its_seq_and_nothing_applies_after_it() -> None:
    events = conversations(1, 3)[0]
    state = fold(events)["s0"]
    # A seq already taken (a turn raced the erasure): still erased, not a conflict.
    first = step(state, erasure("s0", seq=2))
    assert first.outcome is Outcome.APPLIED and first.state.status == ERASED
    again = step(first.state, erasure("s0", seq=99, eid="other"))
    assert again.outcome is Outcome.ERASED and again.state is first.state


def test_a_region_with_the_key_and_one_without_end_equal() -> None:
    """The active region folds the session whole (it has the key) and then its erasure; a region
    rebuilt from the log after the erasure has no key and folds it blank: the same tombstone."""
    key = sealing.new_key()
    events = [*conversations(1, 5)[0]]
    events.append(erasure("s0", seq=len(events) + 1))
    records = [(key_of(e), encode(e, ("east", key))) for e in events]
    whole = [decode_opened(k, v, lookup({("s0", "east"): key}))[0] for k, v in records[:-1]]
    blank = [decode_opened(k, v, lookup({})) for k, v in records]
    assert any(not ok for _e, ok in blank)
    assert fold(whole)["s0"].turns  # before the erasure, the keyed region had the text
    assert fold([*whole, events[-1]]) == fold([e for e, _ok in blank])


def dm(publisher: MemoryPublisher, store: MemoryStore) -> DialogManager:
    clock = itertools.count(1_700_000_000_000, 1000)
    return DialogManager(publisher, sessions=store, region="east", clock=lambda: next(clock))


def test_the_manager_erases_once_and_refuses_turns_after() -> None:
    log, store = MemoryPublisher(), MemoryStore("t")
    manager = dm(log, store)
    manager.process({"text": "my address is 1 Main St", "session_id": "c"})
    tomb = manager.erase("c", "ticket 1")
    assert tomb.status == ERASED and isinstance(log.events[-1], SessionErased)
    assert manager.erase("c") is tomb and sum(isinstance(e, SessionErased) for e in log.events) == 1
    with pytest.raises(SessionIsErased):
        manager.process({"text": "hello again", "session_id": "c"})
    # another region folding the same log holds the same tombstone
    other = MemoryStore("t")
    other.replace_all(fold(log.events).values(), {}, Stats())
    assert other.get("c") == tomb
    assert dm(log, other).erase("c") == tomb and sum(isinstance(e, SessionErased) for e in log.events) == 1


# ---------------------------------------------------------------------------- the key ring's contract


@pytest.fixture(params=["memory", pytest.param("postgres", marks=pytest.mark.integration)])
def ring(request: pytest.FixtureRequest) -> Iterator[KeyRing]:
    if request.param == "memory":
        yield MemoryKeyRing()
        return
    settings_: Settings = request.getfixturevalue("settings")
    pg = PostgresKeyRing(region_dsn(settings_, "east"))
    yield pg
    pg.close()


def test_a_key_is_made_once_and_read_back(ring: KeyRing) -> None:
    kid, key = ring.create("a", "east")
    assert kid == "east" and len(key) == sealing.KEY_BYTES and ring.create("a", "east") == ("east", key)
    assert ring.get_many(["a", "b"]) == {("a", "east"): key} and ring.get_many([]) == {}


def test_a_region_seals_with_the_key_it_was_given_and_keeps_both_after_a_split(ring: KeyRing) -> None:
    east_key = sealing.new_key()
    assert ring.put_many({("a", "east"): east_key}) == 1
    assert ring.create("a", "north") == ("east", east_key)  # north goes on with east's key: no second key
    # a split brain: both regions made a key for a session neither had heard of the other's
    ring.create("b", "north")
    assert ring.put_many({("b", "east"): b"e" * 32, ("b", "north"): b"x" * 32}) == 1
    held = ring.get_many(["b"])
    assert set(held) == {("b", "east"), ("b", "north")} and held[("b", "east")] == b"e" * 32
    assert ring.create("b", "north")[0] == "north" and ring.create("b", "west")[0] == "east"


def test_an_erased_session_has_no_key_and_gets_none_back(ring: KeyRing) -> None:
    ring.create("a", "east")
    kept = ring.create("b", "east")[1]
    ring.put_many({("a", "north"): b"n" * 32})
    ring.erase(["a"])
    ring.erase(["a", "never-seen"])  # idempotent; an unknown id is recorded all the same
    assert ring.get_many(["a", "b"]) == {("b", "east"): kept}  # every key of the session went
    assert ring.erased(["a", "b", "never-seen"]) == {"a", "never-seen"}
    with pytest.raises(SessionIsErased):
        ring.create("a", "east")
    # a copy from another region that had not heard of the erasure yet brings nothing back
    assert ring.put_many({("a", "east"): sealing.new_key(), ("c", "east"): b"k" * 32, ("b", "east"): b"x" * 32}) == 1
    assert ring.get_many(["a", "b", "c"]) == {("b", "east"): kept, ("c", "east"): b"k" * 32}


def test_everything_is_every_key_and_every_erasure(ring: KeyRing) -> None:
    a = ring.create("a", "east")[1]
    ring.put_many({("a", "north"): b"n" * 32, ("b", "east"): b"b" * 32})
    ring.erase(["b", "c"])
    assert ring.everything() == ({("a", "east"): a, ("a", "north"): b"n" * 32}, {"b", "c"})


@pytest.mark.integration
def test_an_erasure_racing_a_copy_leaves_no_key(settings: Settings) -> None:
    """A copier (the replicator's courier) and an eraser (a worker folding erasures) on two
    connections, on the same sessions at the same time: whichever commits first, no erased
    session keeps a key (both take the session's lock: the second sees what the first committed)."""
    dsn = region_dsn(settings, "east")
    copier, eraser = PostgresKeyRing(dsn), PostgresKeyRing(dsn, ensure=False)
    sessions = [f"race-{i}" for i in range(300)]
    start = threading.Barrier(2)

    def copy() -> None:
        start.wait()
        for sid in sessions:
            copier.put_many({(sid, "east"): sealing.new_key()})

    def erase() -> None:
        start.wait()
        for sid in sessions:
            eraser.erase([sid])

    try:
        threads = [threading.Thread(target=copy), threading.Thread(target=erase)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(60)
        assert copier.get_many(sessions) == {} and eraser.erased(sessions) == set(sessions)
    finally:
        copier.close()
        eraser.close()
