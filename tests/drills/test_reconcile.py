"""`regionsync reconcile` on the real stack: every drift class made on purpose, found and
repaired through the pipeline, including rows deleted behind the change feed's back."""

from __future__ import annotations

import orjson
import psycopg
import pytest
from psycopg import sql

from drills.diff import DriftKind
from drills.reconcile import scan
from drills.verify import wait_converged
from indexer.lag import region_lag
from indexer.sink import RegionSink
from regionsync.settings import Settings
from streams.chunking import chunk_text
from streams.publisher import CmsPublisher

from .conftest import cli, wait_for
from .helpers import drop_chunk, drop_document, make_stale

pytestmark = pytest.mark.integration

ROWS = [(f"rc-{i}", f"Reconcile row {i}", f"Paragraph {i} about reconciling regions with their source. " * 12)
        for i in range(1, 9)]
DELETED = [f"rc-{i}" for i in range(1, 6)]


def _drift(settings: Settings) -> dict[tuple[str, str], DriftKind]:
    return {(d.region, d.doc_id): d.kind for d in scan(settings, settings.regions).drifts}


def _delete_behind_the_change_feed(settings: Settings, db: psycopg.Connection, ids: list[str]) -> None:
    """Rows deleted while the table was out of Debezium's publication (an operator's slip, a
    migration): the change feed never says so, the regions keep the documents and lag reads 0.
    (The broker keeps its log now, so a broker restart no longer loses anything to find.)"""
    pub = sql.Identifier(settings.publication)
    db.execute(sql.SQL("ALTER PUBLICATION {} DROP TABLE documents").format(pub))
    db.execute("DELETE FROM documents WHERE id = ANY(%s)", (ids,))
    db.execute(sql.SQL("ALTER PUBLICATION {} ADD TABLE documents").format(pub))


def test_reconcile_finds_and_repairs_every_drift_class(settings: Settings, db: psycopg.Connection) -> None:
    for doc_id, title, body in ROWS:
        db.execute("INSERT INTO documents (id, title, body, tags) VALUES (%s, %s, %s, %s)", (doc_id, title, body, ["rc"]))
    reports = wait_converged(settings, timeout=240)
    assert all(r.matches for r in reports.values()), [r.differences[:5] for r in reports.values()]

    _delete_behind_the_change_feed(settings, db, DELETED)
    # The deletes never reach the feed: the 5 documents stay in every region, and lag reads 0.
    wait_for(lambda: _drift(settings) == {(r, d): DriftKind.DELETED_OR_UNPUBLISHED for r in settings.regions for d in DELETED},
             timeout=240, what="the regions to settle with the 5 deleted documents left behind")
    assert all(region_lag(settings, r) == 0 for r in settings.regions)

    # A CMS document (not in the table), published after the restart.
    CmsPublisher(settings).publish([{"doc_id": "cms-rc", "version": 3, "op": "upsert",
                                     "document": {"title": "CMS doc", "body": "Published straight to Kafka. " * 20}}])
    wait_for(lambda: not any(doc_id == "cms-rc" for _r, doc_id in _drift(settings)), timeout=120, what="cms-rc indexed")

    drop_document(settings, "east", "rc-6")  # missing
    drop_chunk(settings, "east", "rc-7", 1)  # chunks wrong
    make_stale(settings, "north", "rc-8", "An older title")  # stale
    drop_document(settings, "north", "cms-rc")  # missing, CMS origin

    out = cli(settings, "reconcile", "--json")
    assert out.returncode == 1, out.stderr
    found = orjson.loads(out.stdout)
    kinds = {(d["region"], d["doc_id"]): d["kind"] for d in found["drifts"]}
    expected = {(r, d): "deleted_or_unpublished" for r in settings.regions for d in DELETED}
    expected |= {("east", "rc-6"): "missing", ("east", "rc-7"): "chunks_wrong", ("north", "rc-8"): "stale",
                 ("north", "cms-rc"): "missing"}
    assert kinds == expected
    assert found["counts"]["east"] == {"missing": 1, "stale": 0, "chunks_wrong": 1, "deleted_or_unpublished": 5}
    assert {d["origin"] for d in found["drifts"] if d["doc_id"] in DELETED} == {"none"}

    out = cli(settings, "reconcile", "--repair", "--json", "--timeout", "300")
    assert out.returncode == 1, out.stdout[-3000:] + out.stderr[-2000:]  # drift was found, and repaired
    repaired = orjson.loads(out.stdout)
    assert repaired["remaining"] == [], repaired["remaining"]
    assert set(repaired["repair"]["reread_ids"]) == {"rc-6", "rc-7", "rc-8"}
    assert repaired["repair"]["republish_ids"] == ["cms-rc"]
    assert {d["doc_id"] for d in repaired["repair"]["deletes"]} == set(DELETED)

    # Judged by what each region's Milvus holds, not by reconcile's own scan.
    want = {doc_id: (title, chunk_text(body, settings.chunk_size, settings.chunk_overlap)) for doc_id, title, body in ROWS
            if doc_id not in DELETED}
    for region in settings.regions:
        held = _held(settings, region)
        assert not set(DELETED) & set(held), region
        for doc_id, (title, texts) in want.items():
            assert held.get(doc_id) == (title, texts), (region, doc_id, held.get(doc_id))
        assert "cms-rc" in held, region

    out = cli(settings, "reconcile")
    assert out.returncode == 0, out.stdout + out.stderr
    assert "drift: none" in out.stdout
    assert settings.pg_password.get_secret_value() not in out.stdout + out.stderr


def _held(settings: Settings, region: str) -> dict[str, tuple[str, list[str]]]:
    """doc id -> (title, chunk texts in order) as the region's Milvus holds them."""
    sink = RegionSink.for_region(settings, region)
    try:
        rows = [r for r in sink.dump_chunks() if str(r["doc_id"]).startswith(("rc-", "cms-rc"))]
    finally:
        sink.close()
    out: dict[str, tuple[str, list[str]]] = {}
    for r in sorted(rows, key=lambda r: (r["doc_id"], r["chunk_index"])):
        title, texts = out.setdefault(r["doc_id"], (r["title"], []))
        texts.append(r["text"])
    return out
