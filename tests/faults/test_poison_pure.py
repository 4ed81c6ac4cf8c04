"""The storm's hostile events against the pipeline's own parsers (no stack): each one must be
poison with a reason that is right for it, and each good one must parse. This is the contract the
real-stack storm checks again end to end (dead-letter topic, regions)."""

from __future__ import annotations

from collections import Counter

import pytest

from drills.faults.poison import CDC, CMS, HEAVY, Good, Hostile, storm
from streams import cms, debezium
from streams.capture import CaptureSpec
from streams.errors import PoisonEvent

SPEC = CaptureSpec()


def parse(topic: str, key: bytes | None, value: bytes | None) -> object:
    parser = cms.parse if topic == CMS else debezium.parse
    return parser(key, value, SPEC, "t", 0, 0)


@pytest.fixture(scope="module")
def events() -> list[Hostile | Good]:
    return storm(1500, 150, 5, "t", SPEC.max_document_bytes)


def test_every_hostile_event_is_poison_with_a_reason_that_fits_it(events: list[Hostile | Good]) -> None:
    wrong = []
    for e in events:
        if not isinstance(e, Hostile):
            continue
        try:
            parse(e.topic, e.key, e.value)
        except PoisonEvent as exc:
            if exc.reason not in e.reasons or not exc.detail:
                wrong.append(f"{e.topic}:{e.kind} -> {exc.reason} ({exc.detail[:80]})")
        else:
            wrong.append(f"{e.topic}:{e.kind} parsed as a change: {e.value[:120]!r}")
    assert not wrong, "\n".join(wrong[:20])


def test_every_good_event_parses_and_good_documents_change_in_order(events: list[Hostile | Good]) -> None:
    versions: dict[str, list[int]] = {}
    for e in events:
        if isinstance(e, Good):
            change = parse(CMS, e.key, e.value)
            assert change.doc_id == e.doc_id  # type: ignore[attr-defined]
            versions.setdefault(e.doc_id, []).append(e.version)
    assert len(versions) == 150
    assert all(v == sorted(v) and v[0] == 1 for v in versions.values())
    assert [1, 2] in versions.values() and [1, 3] in versions.values()  # updated; deleted


def test_the_storm_covers_every_kind_on_both_topics_and_bounds_the_heavy_ones(events: list[Hostile | Good]) -> None:
    kinds = Counter((e.topic, e.kind) for e in events if isinstance(e, Hostile))
    assert sum(kinds.values()) == 1500
    for kind in ("bad_json", "invalid_utf8", "json_not_object", "unknown_op", "wrong_types", "missing_field",
                 "document_too_large", "huge_tag_list", "key_mismatch", "doc_id_too_long"):
        assert (CMS, kind) in kinds, kind
    for kind in ("bad_json", "invalid_utf8", "unknown_op", "no_source", "lsn_not_integer", "body_not_text",
                 "document_too_large", "huge_tag_list"):
        assert (CDC, kind) in kinds, kind
    assert kinds[(CMS, "ten_mb_document")] == kinds[(CDC, "ten_mb_document")] == 1
    for (topic, kind), n in kinds.items():
        if kind in HEAVY:
            assert n <= HEAVY[kind], (topic, kind, n)


def test_the_same_seed_gives_the_same_storm() -> None:
    a = storm(60, 5, 9, "r", 1000)
    b = storm(60, 5, 9, "r", 1000)
    assert [(type(e).__name__, e.key, e.value) for e in a] == [(type(e).__name__, e.key, e.value) for e in b]
