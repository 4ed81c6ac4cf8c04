"""One contract, two state stores: in memory and Postgres (real server)."""

from __future__ import annotations

import random
from collections.abc import Iterator

import pytest

from dialog.errors import OffsetConflict
from dialog.loadgen import conversation
from dialog.reducer import fold
from dialog.state import SessionState
from dialog.store import MemoryStore, PostgresStore, StateStore, Stats
from regionsync.settings import Settings


@pytest.fixture(params=["memory", "postgres"])
def store(request: pytest.FixtureRequest) -> Iterator[StateStore]:
    if request.param == "memory":
        yield MemoryStore("topic-a")
        return
    settings: Settings = request.getfixturevalue("settings")
    pg = PostgresStore.for_region(settings.model_copy(update={"dialog_topic": "topic-a"}), "east")
    yield pg
    pg.close()


def states(n: int, seed: int = 1) -> list[SessionState]:
    rng = random.Random(seed)
    return list(fold(e for i in range(n) for e in conversation(f"s{i}", rng)).values())


def test_a_new_store_is_empty(store: StateStore) -> None:
    assert store.is_empty() and store.count() == 0 and store.offsets() == {} and store.stats() == Stats()
    assert store.get("nobody") is None and store.all_states() == []


def test_commit_stores_states_positions_and_counters_together(store: StateStore) -> None:
    batch = states(20)
    store.commit(batch, {0: 10, 1: 5}, {}, Stats(applied=15, dead_letters=1))
    assert not store.is_empty() and store.count() == 20
    assert {s.session_id: s for s in store.all_states()} == {s.session_id: s for s in batch}
    assert store.get("s3") == batch[3]
    assert store.offsets() == {0: 10, 1: 5}
    store.commit(batch[:2], {0: 12}, {0: 10}, Stats(applied=2, duplicates=1))
    assert store.offsets() == {0: 12, 1: 5} and store.stats() == Stats(applied=17, duplicates=1, dead_letters=1)


def test_a_stale_position_writes_nothing(store: StateStore) -> None:
    first, second = states(2), states(2, seed=2)
    store.commit(first, {0: 10}, {}, Stats(applied=1))
    for offsets, expected in (({0: 20}, {0: 9}), ({0: 20}, {}), ({1: 3, 0: 20}, {0: 9})):
        with pytest.raises(OffsetConflict):
            store.commit(second, offsets, expected, Stats(applied=5))
    assert store.offsets() == {0: 10} and store.stats() == Stats(applied=1)
    assert store.get("s0") == first[0]


def test_replace_all_swaps_everything(store: StateStore) -> None:
    store.commit(states(5), {0: 7, 3: 1}, {}, Stats(applied=7))
    snap = states(3, seed=9)
    store.replace_all(snap, {0: 100, 1: 50}, Stats(applied=150, gaps=2))
    assert store.count() == 3 and store.get("s4") is None and store.get("s1") == snap[1]
    assert store.offsets() == {0: 100, 1: 50} and store.stats() == Stats(applied=150, gaps=2)


def test_states_round_trip_exactly(store: StateStore) -> None:
    odd = SessionState(
        session_id="ünï-cødé 🙂",
        slots={"n": 1, "f": 0.1, "nested": {"a": [1, None, "x"]}, "big": 2**53},
        gaps=((3, 4),),
        recent=((5, "e5"),),
    )
    store.commit([odd], {0: 1}, {}, Stats(applied=1))
    assert store.get(odd.session_id) == odd
