"""The pure fold that decides what a batch does to one document."""

from __future__ import annotations

from indexer.plan import DocState, Relabel, Remove, Write, plan_document
from streams.events import RecordOp

from .conftest import RecordFactory


def test_newest_upsert_wins_and_the_rest_are_stale(hash_record: RecordFactory) -> None:
    v3 = hash_record("d", 3, ["c"])
    plan = plan_document("d", DocState(2, "h", 1, False), [v3, hash_record("d", 1, ["a"]), hash_record("d", 2, ["b"])])
    assert plan.effect == Write(v3) and plan.stale == 2


def test_nothing_newer_than_stored_means_no_effect(hash_record: RecordFactory) -> None:
    plan = plan_document("d", DocState(5, "h", 2, False), [hash_record("d", 5, ["x"]), hash_record("d", 4, op=RecordOp.DELETE)])
    assert plan.effect is None and plan.stale == 2 and plan.max_chunks == 2


def test_max_chunks_covers_every_upsert_seen(hash_record: RecordFactory) -> None:
    plan = plan_document("d", DocState(1, "h", 3, False), [hash_record("d", 2, list("abcdefg")), hash_record("d", 3, ["z"])])
    assert plan.max_chunks == 7 and isinstance(plan.effect, Write) and len(plan.effect.record.chunks) == 1


def test_meta_merges_into_a_pending_upsert(hash_record: RecordFactory) -> None:
    up = hash_record("d", 2, ["body"], title="old")
    plan = plan_document("d", None, [up, hash_record("d", 3, op=RecordOp.META, title="new", tags=["t"])])
    assert isinstance(plan.effect, Write)
    merged = plan.effect.record
    assert (merged.version, merged.title, merged.tags, merged.chunks) == (3, "new", ("t",), up.chunks)


def test_meta_on_stored_chunks_relabels_and_on_nothing_is_missing(hash_record: RecordFactory) -> None:
    meta = hash_record("d", 4, op=RecordOp.META, title="t")
    assert plan_document("d", DocState(3, "h", 2, False), [meta]).effect == Relabel(meta)
    missing = plan_document("d", None, [meta])
    assert missing.effect is None and missing.meta_missing == meta  # the record the heal request names
    deleted = plan_document("d", DocState(3, None, 0, True), [meta])
    assert deleted.effect is None and deleted.meta_missing == meta


def test_tombstone_deletes_at_the_running_version(hash_record: RecordFactory) -> None:
    tomb = hash_record("d", None, op=RecordOp.DELETE)
    plan = plan_document("d", DocState(3, "h", 2, False), [hash_record("d", 5, ["x"]), tomb])
    assert isinstance(plan.effect, Remove) and plan.effect.version == 5
    assert plan_document("d", None, [tomb]).effect == Remove(None, tomb)


def test_delete_then_late_upsert_then_newer_upsert(hash_record: RecordFactory) -> None:
    v4 = hash_record("d", 4, ["new"])
    plan = plan_document("d", DocState(1, "h", 1, False), [hash_record("d", 2, op=RecordOp.DELETE), hash_record("d", 1, ["old"]), v4])
    assert plan.effect == Write(v4) and plan.stale == 1


def test_a_meta_record_naming_other_text_than_the_region_holds_asks_for_the_document(
    hash_record: RecordFactory,
) -> None:
    # The agent sends "title changed, text as before (hash h)": a region holding h re-labels...
    meta = hash_record("d", 4, op=RecordOp.META, title="t", content_hash="h")
    assert plan_document("d", DocState(3, "h", 2, False), [meta]).effect == Relabel(meta)
    # ...one holding other text (it missed a text change) must not stamp it with version 4.
    behind = plan_document("d", DocState(3, "old", 2, False), [meta])
    assert behind.effect is None and behind.meta_missing == meta
    # The same on top of an upsert of other text in the same batch: the upsert stands, and asks.
    up = hash_record("d", 3, ["other text"])
    mixed = plan_document("d", None, [up, meta])
    assert mixed.effect == Write(up) and mixed.meta_missing == meta
    # A newer whole state in the batch answers the question itself.
    newer = hash_record("d", 5, ["newest"])
    assert plan_document("d", DocState(3, "old", 2, False), [meta, newer]).meta_missing is None
