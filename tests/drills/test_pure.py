"""Pure decisions of the drills package, on plain data: drift classes, repair plans, replay
ranges, checkpoints, the rate limiter, command-line times."""

from __future__ import annotations

from pathlib import Path

import pytest

from drills import checkpoint as ckpt
from drills.diff import DriftKind, Origin, SourceView, classify_region, counts_by_kind
from drills.errors import BadInput
from drills.plan import plan_repair
from drills.ranges import PartitionRange, resolve_ranges
from drills.rate import RateLimiter, parse_rate
from drills.reread import heal_requests
from drills.timeparse import parse_duration, parse_time_ms
from drills.verify import ExpectedDoc
from streams.events import content_hash


def exp(doc_id: str, text: str, title: str = "T", version: int | None = None) -> ExpectedDoc:
    return ExpectedDoc(doc_id, content_hash(text), (text,), title, (), version)


def rows(doc_id: str, text: str, title: str = "T", version: int = 10, n: int = 1) -> list[dict]:
    return [
        {"doc_id": doc_id, "chunk_index": i, "text": text, "content_hash": content_hash(text), "title": title,
         "tags": [], "version": version}
        for i in range(n)
    ]


SOURCE = SourceView(
    expected={
        "ok": exp("ok", "same"),
        "gone-from-region": exp("gone-from-region", "text"),
        "old": exp("old", "new text"),
        "retitled": exp("retitled", "x", title="new title"),
        "broken": exp("broken", "b"),
        "cms-doc": exp("cms-doc", "c", version=7),
    },
    table_status={"ok": "published", "gone-from-region": "published", "old": "published", "retitled": "published",
                  "broken": "published", "hidden": "draft"},
    cms_versions={"cms-doc": (7, "upsert"), "cms-deleted": (9, "delete")},
)


def test_each_drift_class_is_found_once_per_document() -> None:
    region_rows = (
        rows("ok", "same") + rows("old", "old text") + rows("retitled", "x", title="old title")
        + [r | {"chunk_index": 1} for r in rows("broken", "b")]  # chunk 0 lost: indexes 1..1
        + rows("cms-doc", "c", version=5)
        + rows("hidden", "h") + rows("cms-deleted", "d", version=8) + rows("orphan", "o", version=40)
    )
    drifts = {d.doc_id: d for d in classify_region("east", SOURCE, region_rows)}
    assert "ok" not in drifts
    assert drifts["gone-from-region"].kind is DriftKind.MISSING
    assert drifts["old"].kind is DriftKind.STALE
    assert drifts["retitled"].kind is DriftKind.STALE and "title" in drifts["retitled"].detail
    assert drifts["broken"].kind is DriftKind.CHUNKS_WRONG
    assert drifts["cms-doc"].kind is DriftKind.STALE and drifts["cms-doc"].origin is Origin.CMS
    for doc_id in ("hidden", "cms-deleted", "orphan"):
        assert drifts[doc_id].kind is DriftKind.DELETED_OR_UNPUBLISHED
    assert drifts["hidden"].origin is Origin.TABLE and "draft" in drifts["hidden"].detail
    assert drifts["cms-deleted"].origin is Origin.CMS and "delete" in drifts["cms-deleted"].detail
    assert drifts["orphan"].origin is Origin.NONE and drifts["orphan"].held_version == 40
    assert counts_by_kind(list(drifts.values())) == {
        "missing": 1, "stale": 3, "chunks_wrong": 1, "deleted_or_unpublished": 3,
    }


def test_same_text_over_a_mixed_chunk_set_is_chunks_wrong_not_stale() -> None:
    source = SourceView({"d": ExpectedDoc("d", content_hash("ab"), ("a", "b"), "T", ())}, {"d": "published"}, {})
    mixed = [
        {"doc_id": "d", "chunk_index": 0, "text": "a", "content_hash": content_hash("ab"), "title": "T", "tags": [], "version": 5},
        {"doc_id": "d", "chunk_index": 1, "text": "b", "content_hash": content_hash("ab"), "title": "T", "tags": [], "version": 3},
    ]
    [drift] = classify_region("east", source, mixed)
    assert drift.kind is DriftKind.CHUNKS_WRONG


def test_repair_plan_routes_each_origin_through_its_own_path() -> None:
    region_rows = rows("ok", "same") + rows("old", "old text") + rows("hidden", "h") + rows("cms-doc", "c", version=5) + rows(
        "cms-deleted", "d", version=8) + rows("orphan", "o", version=40)
    drifts = classify_region("east", SOURCE, region_rows)
    held = {"east": {"old": 10, "hidden": 10, "cms-doc": 5, "cms-deleted": 8, "orphan": 40}, "north": {"orphan": 44}}
    plan = plan_repair(drifts, {"cms-doc": 7, "cms-deleted": 9}, held)
    assert set(plan.reread_ids) == {"old", "hidden", "gone-from-region", "retitled", "broken"}
    assert set(plan.republish_ids) == {"cms-doc", "cms-deleted"}  # both newer than what the region holds
    assert plan.deletes == (("orphan", 45),)  # above the highest version any region holds
    assert not plan.unrepairable


def test_repair_plan_cms_document_at_the_current_version() -> None:
    source = SourceView({"c": exp("c", "new", version=7)}, {}, {"c": (7, "upsert"), "x": (9, "delete")})
    drifts = classify_region("east", source, rows("c", "other", version=7) + rows("x", "x", version=12))
    plan = plan_repair(drifts, {"c": 7, "x": 9}, {"east": {"c": 7, "x": 12}})
    # a held version >= the event's: publishing the event again would be skipped by the guard
    assert [d for d, _ in plan.unrepairable] == ["c"]
    assert plan.deletes == (("x", 13),) and not plan.republish_ids


def test_repair_plan_republishes_a_cms_document_one_region_lacks() -> None:
    source = SourceView({"c": exp("c", "t", version=3)}, {}, {"c": (3, "upsert")})
    drifts = classify_region("north", source, [])
    plan = plan_repair(drifts, {"c": 3}, {"east": {"c": 3}, "north": {}})
    assert plan.republish_ids == ("c",) and not plan.unrepairable  # east skips it, north applies it


def test_reread_requests_carry_one_version_for_every_row() -> None:
    reqs = heal_requests(["a", "b"], 123456, 7)
    assert [(r.doc_id, r.version, r.source_kind, r.region) for r in reqs] == [
        ("a", 123456, "debezium", "reconcile"), ("b", 123456, "debezium", "reconcile")]


MARKS = {0: (0, 10), 1: (5, 8), 2: (0, 0)}


def test_ranges_default_to_everything_and_clamp() -> None:
    got = resolve_ranges("t", MARKS, None, {}, {})
    assert got == [PartitionRange(0, 0, 10), PartitionRange(1, 5, 8), PartitionRange(2, 0, 0)]
    got = resolve_ranges("t", MARKS, [0, 1], {0: 3, 1: 0}, {0: 100, 1: 7})
    assert got == [PartitionRange(0, 3, 10), PartitionRange(1, 5, 7)]  # before low -> low; past end -> end


@pytest.mark.parametrize(
    ("partitions", "starts", "message"),
    [
        ([0], {0: 11}, "past the end"),
        ([3], {}, "no partition 3"),
        ([2], {}, "nothing to replay"),
        ([0, 1], {0: 10, 1: 8}, "nothing to replay"),
    ],
)
def test_ranges_refuse_bad_input(partitions: list[int], starts: dict, message: str) -> None:
    with pytest.raises(BadInput, match=message):
        resolve_ranges("t", MARKS, partitions, starts, {})


def test_checkpoint_resumes_where_acknowledged_output_ends(tmp_path: Path) -> None:
    path = tmp_path / "cp.json"
    job = ckpt.job_key({"topic": "t", "to_topic": "u"})
    cp = ckpt.Checkpoint.start(job, [PartitionRange(0, 0, 10), PartitionRange(1, 5, 8)])
    cp.advance(0, 4)
    cp.advance(0, 2)  # never backwards
    ckpt.save(path, cp)
    loaded = ckpt.load(path, job)
    assert loaded is not None and loaded.sent == 4
    assert loaded.remaining() == [PartitionRange(0, 4, 10), PartitionRange(1, 5, 8)]
    loaded.advance(0, 10)
    loaded.advance(1, 8)
    assert loaded.remaining() == [] and loaded.sent == 13
    loaded.done = True
    ckpt.save(path, loaded)
    assert ckpt.load(path, job) is None  # a finished job starts over
    with pytest.raises(BadInput, match="another replay job"):
        ckpt.load(path, ckpt.job_key({"topic": "other"}))
    assert ckpt.load(tmp_path / "none.json", job) is None


def test_rate_limiter_on_a_fake_clock() -> None:
    now = [0.0]
    slept: list[float] = []

    def sleep(s: float) -> None:
        slept.append(s)
        now[0] += s

    limiter = RateLimiter(10.0, clock=lambda: now[0], sleep=sleep)
    for _ in range(21):
        limiter.acquire()
    assert now[0] == pytest.approx(2.0)  # one at once, then 10 per second
    unlimited = RateLimiter(None, clock=lambda: now[0], sleep=sleep)
    before = len(slept)
    for _ in range(1000):
        unlimited.acquire()
    assert len(slept) == before
    assert parse_rate("200/s") == 200.0
    with pytest.raises(BadInput):
        parse_rate("fast")


def test_durations_and_times() -> None:
    assert parse_duration("24h") == 86400 and parse_duration("90") == 90 and parse_duration("1d") == 86400
    for bad in ("", "0h", "tomorrow", "-5m"):
        with pytest.raises(BadInput):
            parse_duration(bad)
    assert parse_time_ms("1700000000000") == 1700000000000
    assert parse_time_ms("2026-11-30T00:00:00Z") == parse_time_ms("2026-11-30T00:00:00") == 1795996800000
    with pytest.raises(BadInput):
        parse_time_ms("yesterday")


def test_inflight_candidates_include_running_ids_at_or_above_the_snapshots_xmax() -> None:
    from drills.reread import inflight_candidates

    # xmax is the newest completed id + 1: a writer that got 739 is running but not listed.
    assert inflight_candidates("737:739:737", 741) == [737, 739, 740]
    assert inflight_candidates("800:800:", 801) == [800]
    assert inflight_candidates("5:9:5,7", 9) == [5, 7]
    assert len(inflight_candidates("1:1:", 10**6, limit=10)) == 10
