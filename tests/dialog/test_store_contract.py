"""One contract, two state stores: in memory and Postgres (real server, the region's own database).

Positions are per (topic, partition) of the region's broker (its own dialog topic, the copies of
the other regions', the control topics); source positions per (origin region, partition); the
same transaction records fenced events and promotions, and refuses a batch folded with
promotions the store no longer holds (:class:`PromotionsChanged`)."""

from __future__ import annotations

import random
from collections.abc import Iterator

import pytest

from dialog.errors import OffsetConflict, PromotionsChanged
from dialog.fence import Promotion
from dialog.loadgen import conversation
from dialog.memory_store import MemoryStore
from dialog.pg_store import PostgresStore
from dialog.reducer import fold
from dialog.state import SessionState
from dialog.store import FencedEvent, StateStore, Stats
from regionsync.settings import Settings

OWN = "topic-a"  # the region's own dialog topic
COPY = "north.topic-a"  # north's dialog topic as copied into this region
CONTROL = "control-a"


@pytest.fixture(params=["memory", pytest.param("postgres", marks=pytest.mark.integration)])
def store(request: pytest.FixtureRequest) -> Iterator[StateStore]:
    if request.param == "memory":
        yield MemoryStore(OWN)
        return
    settings: Settings = request.getfixturevalue("settings")
    pg = PostgresStore.for_region(settings.model_copy(update={"dialog_topic": OWN}), "east")
    yield pg
    pg.close()


def states(n: int, seed: int = 1) -> list[SessionState]:
    rng = random.Random(seed)
    return list(fold(e for i in range(n) for e in conversation(f"s{i}", rng)).values())


def fenced_event(origin: str, partition: int, offset: int, seq: int = 3) -> FencedEvent:
    return FencedEvent(origin, partition, offset, f"sess-{offset}", seq, f"e-{origin}-{partition}-{offset}", 1, 2,
                       "north", b'{"type": "user_utterance", "text": "lost turn"}')


PROMO = Promotion(2, "north", "east", cut={"east": {0: 7, 1: 0}}, at_ms=1_700_000_000_000)


def test_a_new_store_is_empty(store: StateStore) -> None:
    assert store.is_empty() and store.count() == 0 and store.offsets() == {} and store.stats() == Stats()
    assert store.sources() == {} and store.folded() == {} and store.fenced() == [] and store.promotions() == []
    assert store.get("nobody") is None and store.all_states() == []


def test_commit_stores_states_positions_and_counters_together(store: StateStore) -> None:
    batch = states(20)
    store.commit(batch, {(OWN, 0): 10, (OWN, 1): 5, (COPY, 0): 3}, {}, Stats(applied=15, dead_letters=1))
    assert not store.is_empty() and store.count() == 20
    assert {s.session_id: s for s in store.all_states()} == {s.session_id: s for s in batch}
    assert store.get("s3") == batch[3]
    assert store.offsets() == {(OWN, 0): 10, (OWN, 1): 5, (COPY, 0): 3}
    # The same partition number of another topic is another position.
    store.commit(batch[:2], {(OWN, 0): 12, (COPY, 1): 4}, {(OWN, 0): 10}, Stats(applied=2, duplicates=1, fenced=1))
    assert store.offsets() == {(OWN, 0): 12, (OWN, 1): 5, (COPY, 0): 3, (COPY, 1): 4}
    assert store.stats() == Stats(applied=17, duplicates=1, dead_letters=1, fenced=1)


def test_a_stale_position_writes_nothing(store: StateStore) -> None:
    first, second = states(2), states(2, seed=2)
    store.commit(first, {(OWN, 0): 10}, {}, Stats(applied=1), sources={("east", 0): 10}, folded={("east", 0): 10})
    for offsets, expected in (
        ({(OWN, 0): 20}, {(OWN, 0): 9}),
        ({(OWN, 0): 20}, {}),
        ({(OWN, 1): 3, (OWN, 0): 20}, {(OWN, 0): 9}),
        ({(OWN, 0): 20}, {(COPY, 0): 10}),  # the right offset of the wrong topic
    ):
        with pytest.raises(OffsetConflict):
            store.commit(second, offsets, expected, Stats(applied=5), sources={("east", 0): 20},
                         folded={("east", 0): 20}, fenced=[fenced_event("east", 0, 11)], promotions=[PROMO])
    assert store.offsets() == {(OWN, 0): 10} and store.stats() == Stats(applied=1)
    assert store.sources() == {("east", 0): 10} and store.folded() == {("east", 0): 10}
    assert store.fenced() == [] and store.promotions() == []
    assert store.get("s0") == first[0]


def test_source_positions_only_move_forward(store: StateStore) -> None:
    store.commit([], {(OWN, 0): 10, (COPY, 0): 4}, {}, Stats(),
                 sources={("east", 0): 10, ("north", 0): 6}, folded={("east", 0): 8, ("north", 0): 6})
    # A record copied late (north's 5th, copied after east's turns) does not move north back.
    store.commit([], {(COPY, 0): 5}, {(COPY, 0): 4}, Stats(), sources={("north", 0): 5, ("east", 1): 2},
                 folded={("north", 0): 5, ("east", 1): 2})
    assert store.sources() == {("east", 0): 10, ("north", 0): 6, ("east", 1): 2}
    assert store.folded() == {("east", 0): 8, ("north", 0): 6, ("east", 1): 2}


def test_a_partition_whose_events_were_all_fenced_has_a_source_position_and_nothing_folded(store: StateStore) -> None:
    store.commit([], {(OWN, 0): 3, (COPY, 0): 2}, {}, Stats(fenced=2), sources={("east", 0): 3, ("north", 0): 2},
                 folded={("east", 0): 3}, fenced=[fenced_event("north", 0, 0), fenced_event("north", 0, 1)])
    assert store.sources() == {("east", 0): 3, ("north", 0): 2}
    # Nothing of north's partition 0 was folded, so no promotion can find it tainted there.
    assert store.folded() == {("east", 0): 3}


def test_fenced_events_and_promotions_are_recorded_with_the_batch_once(store: StateStore) -> None:
    first = [fenced_event("east", 0, 7), fenced_event("east", 0, 8)]
    store.commit([], {(OWN, 0): 9, (CONTROL, 0): 1}, {}, Stats(fenced=2), fenced=first, promotions=[PROMO])
    later = fenced_event("east", 1, 0)
    # Read again (a refold, a replayed control record): recorded once.
    store.commit([], {(OWN, 1): 1}, {}, Stats(fenced=1), fenced=[first[1], later], promotions=[PROMO])
    assert store.promotions() == [PROMO]
    assert store.fenced() == [*first, later]  # oldest first
    assert store.fenced()[0].to_dict()["event"] == {"type": "user_utterance", "text": "lost turn"}
    newer = Promotion(3, "east", "north", cut={"north": {0: 2}}, at_ms=1_700_000_001_000)
    store.commit([], {}, {}, Stats(), promotions=[newer])
    assert store.promotions() == [PROMO, newer]  # by ballot


def test_a_batch_folded_with_promotions_the_store_no_longer_holds_writes_nothing(store: StateStore) -> None:
    store.commit(states(2), {(OWN, 0): 5}, {}, Stats(applied=2), known_promotions=[])
    # The service recorded a promotion meanwhile (another writer of the promotions).
    store.commit([], {}, {}, Stats(), promotions=[PROMO])
    with pytest.raises(PromotionsChanged):
        store.commit(states(3, seed=2), {(OWN, 0): 9}, {(OWN, 0): 5}, Stats(applied=4),
                     sources={("east", 0): 9}, folded={("east", 0): 9}, fenced=[fenced_event("east", 0, 8)],
                     known_promotions=[])
    assert store.offsets() == {(OWN, 0): 5} and store.stats() == Stats(applied=2) and store.count() == 2
    assert store.sources() == {} and store.fenced() == []
    # Folded again knowing it: accepted.
    store.commit(states(3, seed=2), {(OWN, 0): 9}, {(OWN, 0): 5}, Stats(applied=4),
                 known_promotions=[(PROMO.epoch, PROMO.region)])
    assert store.offsets() == {(OWN, 0): 9} and store.stats() == Stats(applied=6)
    # A batch that thinks the store knows more than it does is refused too.
    with pytest.raises(PromotionsChanged):
        store.commit([], {(OWN, 0): 10}, {(OWN, 0): 9}, Stats(), known_promotions=[(2, "north"), (3, "east")])
    assert store.offsets() == {(OWN, 0): 9}


def test_a_batch_that_brings_a_promotion_is_accepted_with_what_the_store_held_before(
    store: StateStore, request: pytest.FixtureRequest
) -> None:
    """The worker folds a control record and passes the promotions it knew before the batch."""
    store.commit([], {(OWN, 0): 5}, {}, Stats(), known_promotions=[])
    store.commit([], {(OWN, 0): 6, (CONTROL, 0): 1}, {(OWN, 0): 5}, Stats(), promotions=[PROMO], known_promotions=[])
    assert store.promotions() == [PROMO] and store.offsets() == {(OWN, 0): 6, (CONTROL, 0): 1}


def test_replace_all_swaps_everything_but_promotions_and_fenced_events(store: StateStore) -> None:
    store.commit(states(5), {(OWN, 0): 7, (OWN, 3): 1}, {}, Stats(applied=7), sources={("east", 0): 7},
                 folded={("east", 0): 7}, fenced=[fenced_event("east", 0, 6)], promotions=[PROMO])
    snap = states(3, seed=9)
    store.replace_all(snap, {(OWN, 0): 100, (COPY, 1): 50}, Stats(applied=150, gaps=2),
                      {("east", 0): 100, ("north", 1): 50}, {("east", 0): 90, ("north", 1): 50})
    assert store.count() == 3 and store.get("s4") is None and store.get("s1") == snap[1]
    assert store.offsets() == {(OWN, 0): 100, (COPY, 1): 50} and store.stats() == Stats(applied=150, gaps=2)
    assert store.sources() == {("east", 0): 100, ("north", 1): 50}
    assert store.folded() == {("east", 0): 90, ("north", 1): 50}
    assert store.promotions() == [PROMO] and store.fenced() == [fenced_event("east", 0, 6)]


def test_states_round_trip_exactly(store: StateStore) -> None:
    odd = SessionState(
        session_id="ünï-cødé 🙂",
        slots={"n": 1, "f": 0.1, "nested": {"a": [1, None, "x"]}, "big": 2**53},
        gaps=((3, 4),),
        recent=((5, "e5"),),
    )
    store.commit([odd], {(OWN, 0): 1}, {}, Stats(applied=1))
    assert store.get(odd.session_id) == odd


def test_a_commit_that_erases_deletes_the_keys_in_the_same_transaction(store: StateStore) -> None:
    store.keyring.create("gone", "east")
    kept = store.keyring.create("kept", "east")[1]
    with pytest.raises(OffsetConflict):
        store.commit([], {(OWN, 0): 5}, {(OWN, 0): 99}, Stats(erased=1), erased=["gone"])
    assert set(store.keyring.get_many(["gone"])) == {("gone", "east")}  # nothing written
    store.commit([], {(OWN, 0): 5}, {}, Stats(erased=1, unopened=2), erased=["gone"])
    assert store.keyring.get_many(["gone", "kept"]) == {("kept", "east"): kept}
    assert store.keyring.erased(["gone", "kept"]) == {"gone"}
    assert (store.stats().erased, store.stats().unopened) == (1, 2)
