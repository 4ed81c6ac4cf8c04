"""The CMS topic's lost history (the embedded broker restarted empty, or retention): found from the
offsets the regions applied, and never read as "delete these documents"."""

from __future__ import annotations

from drills.diff import DriftKind, Origin, SourceView, classify_region
from drills.history import assess, held_offsets
from drills.plan import plan_repair
from streams.events import content_hash

TOPIC = "regionsync.cms.documents"


def cms_rows(doc_id: str, partition: int, offset: int, version: int = 3, topic: str = TOPIC) -> list[dict]:
    return [{"doc_id": doc_id, "chunk_index": 0, "text": "t", "content_hash": content_hash("t"), "title": "T",
             "tags": [], "version": version,
             "source": {"kind": "cms", "topic": topic, "partition": partition, "offset": offset}}]


def table_rows(doc_id: str, version: int = 90) -> list[dict]:
    return [{"doc_id": doc_id, "chunk_index": 0, "text": "t", "content_hash": content_hash("t"), "title": "T",
             "tags": [], "version": version,
             "source": {"kind": "debezium", "topic": "cms.public.documents", "partition": 0, "offset": 4}}]


EMPTY_SOURCE = SourceView(expected={}, table_status={}, cms_versions={})


def test_documents_held_from_a_topic_that_forgot_them_are_protected_not_deleted() -> None:
    region = cms_rows("cms-a", 0, 40) + cms_rows("cms-b", 1, 7) + table_rows("row-gone")
    drifts = {d.doc_id: d for d in classify_region("east", EMPTY_SOURCE, region)}
    assert drifts["cms-a"].origin is Origin.CMS_LOST and drifts["cms-b"].origin is Origin.CMS_LOST
    assert drifts["cms-a"].kind is DriftKind.DELETED_OR_UNPUBLISHED
    assert f"{TOPIC}[0]@40" in drifts["cms-a"].detail
    assert drifts["row-gone"].origin is Origin.NONE  # a table document really is gone: deleted
    plan = plan_repair(list(drifts.values()), {}, {"east": {"cms-a": 3, "cms-b": 3, "row-gone": 90}})
    assert [d for d, _v in plan.deletes] == ["row-gone"]
    assert {d for d, _why in plan.unrepairable} == {"cms-a", "cms-b"}
    assert all("history lost" in why for _d, why in plan.unrepairable)


def test_one_region_holding_it_from_the_lost_topic_protects_the_document_everywhere() -> None:
    east = classify_region("east", EMPTY_SOURCE, cms_rows("cms-a", 0, 40))
    north = classify_region("north", EMPTY_SOURCE, [r | {"source": None} for r in cms_rows("cms-a", 0, 40)])
    assert north[0].origin is Origin.NONE
    plan = plan_repair(east + north, {}, {"east": {"cms-a": 3}, "north": {"cms-a": 3}})
    assert plan.deletes == () and [d for d, _ in plan.unrepairable] == ["cms-a"]


def test_a_cms_document_with_its_newest_event_still_on_the_topic_is_repaired_as_before() -> None:
    source = SourceView(expected={}, table_status={}, cms_versions={"cms-del": (9, "delete")})
    drifts = classify_region("east", source, cms_rows("cms-del", 0, 2, version=8))
    assert drifts[0].origin is Origin.CMS
    plan = plan_repair(drifts, {"cms-del": 9}, {"east": {"cms-del": 8}})
    assert plan.unrepairable == () and plan.republish_ids == ("cms-del",)


def test_offsets_past_the_end_say_the_partition_was_recreated() -> None:
    east = held_offsets(TOPIC, cms_rows("a", 0, 40) + cms_rows("b", 0, 12) + cms_rows("c", 1, 2) + table_rows("r"))
    assert east == {0: 40, 1: 2}
    north = held_offsets(TOPIC, cms_rows("a", 0, 3))
    history = assess(TOPIC, {0: (0, 5), 1: (0, 9)}, {"east": east, "north": north}, orphans=[])
    assert history.lost
    p0, p1 = history.partitions
    assert p0.went_back and p0.highest_held == 40 and p0.held_by == ("east",)
    assert not p1.went_back
    assert "recreated" in history.evidence()[0] and "applied offset 40" in history.evidence()[0]
    assert history.to_dict()["partitions"][0]["went_back"] is True


def test_an_empty_topic_while_regions_hold_its_documents_is_a_loss() -> None:
    history = assess(TOPIC, {}, {"east": {0: 0}}, orphans=["a"])
    assert history.lost and history.partitions[0].end == 0
    assert any("1 documents" in line for line in history.evidence())


def test_a_topic_that_kept_its_history_is_not_a_loss() -> None:
    history = assess(TOPIC, {0: (0, 50)}, {"east": {0: 49}, "north": {0: 12}}, orphans=[])
    assert not history.lost and history.evidence() == []
    assert held_offsets(TOPIC, cms_rows("a", 0, 5, topic="other.topic")) == {}


def test_repair_rounds_merge_into_one_plan() -> None:
    from drills.plan import RepairPlan
    from drills.reconcile import merge_plans

    first = RepairPlan(("a", "b"), ("cms-1",), (("gone", 5),), (("cms-lost", "history lost"), ("c", "needs a version")))
    second = RepairPlan(("b", "d"), (), (("gone", 9), ("late", 3)), ())
    merged = merge_plans([first, second])
    assert merged.reread_ids == ("a", "b", "d") and merged.republish_ids == ("cms-1",)
    assert merged.deletes == (("gone", 9), ("late", 3))
    assert merged.unrepairable == (("c", "needs a version"), ("cms-lost", "history lost"))
    assert merge_plans([RepairPlan((), (), (), (("x", "why"),)), RepairPlan(("x",))]).unrepairable == ()
