"""Issue 2's acceptance on the real stack: Postgres -> Debezium/Connect -> tansu -> Faust change
agent (real model) -> chunks topic -> one indexer per region -> each region's Milvus."""

from __future__ import annotations

import random
import re
import sys
import threading
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np
import orjson
import psycopg
import pytest
from confluent_kafka import Producer

from bench.corpus import stdlib_documents
from connectors.client import ConnectClient
from connectors.config import load as load_connector_config
from drills import verify
from embedding.embedder import Embedder
from embedding.runtime import embedder_from_settings
from embedding.vectors import vectors_close
from indexer.sink import RegionSink
from mirror import policy
from regionsync.kafka import read_topic
from regionsync.settings import PLACEHOLDER, Settings
from stack import milvus, procs, stack
from streams.deadletter import DeadLetter
from streams.events import DocRecord, RecordOp, SourceRef
from streams.publisher import CmsPublisher

from .conftest import SEED, wait_for

pytestmark = pytest.mark.integration

CORPUS = stdlib_documents(limit=400)


def converged(settings: Settings, timeout: float = 90.0, with_versions: bool = False) -> dict[str, verify.RegionReport]:
    reports = verify.wait_converged(settings, timeout=timeout, with_versions=with_versions)
    problems = [d for r in reports.values() for d in r.differences]
    assert not problems, "\n".join(problems[:30])
    return reports


def sink(settings: Settings, region: str) -> RegionSink:
    return RegionSink.for_region(settings, region)


def doc_rows(settings: Settings, region: str, doc_id: str) -> list[dict]:
    s = sink(settings, region)
    try:
        return [r for r in s.dump_chunks() if r["doc_id"] == doc_id]
    finally:
        s.close()


def records_for(settings: Settings, doc_id: str) -> list[DocRecord]:
    out = []
    for msg in read_topic(settings, settings.chunks_topic):
        if msg.key() == doc_id.encode():
            out.append(DocRecord.from_bytes(msg.value()))
    return out


def test_snapshot_of_preexisting_rows_reaches_both_regions(settings: Settings) -> None:
    converged(settings)
    for region in settings.regions:
        for doc_id, title, _body, _tags in SEED:
            rows = doc_rows(settings, region, doc_id)
            assert rows and rows[0]["title"] == title
            assert rows[0]["source"]["op"] == "r"  # read by the initial snapshot


def test_document_lifecycle(settings: Settings, db: psycopg.Connection) -> None:
    body = CORPUS[0].body + "\n\n" + CORPUS[1].body
    db.execute("INSERT INTO documents (id, title, body, tags) VALUES ('life', 'Life', %s, %s)", (body, ["a"]))
    converged(settings)
    v1 = {r: doc_rows(settings, r, "life")[0]["version"] for r in settings.regions}

    # Body update: re-embedded.
    db.execute("UPDATE documents SET body = %s WHERE id = 'life'", (CORPUS[2].body,))
    converged(settings)
    rows = doc_rows(settings, "east", "life")
    assert rows[0]["version"] > v1["east"]
    assert [r["text"] for r in rows][0].startswith(CORPUS[2].body[:50])
    upsert = [r for r in records_for(settings, "life") if r.version == rows[0]["version"]][0]
    assert upsert.embedded > 0

    # Title/tags-only update: new metadata, same vectors, nothing embedded (counted on the record).
    before = {r["chunk_index"]: r["embedding"] for r in rows}
    db.execute("UPDATE documents SET title = 'Life, renamed', tags = %s WHERE id = 'life'", (["a", "b"],))
    converged(settings)
    for region in settings.regions:
        after = doc_rows(settings, region, "life")
        assert {r["title"] for r in after} == {"Life, renamed"}
        assert all((r["embedding"] == before[r["chunk_index"]]).all() for r in after)
    meta_version = doc_rows(settings, "east", "life")[0]["version"]
    meta_rec = [r for r in records_for(settings, "life") if r.version == meta_version][0]
    assert meta_rec.embedded == 0 and meta_rec.op is RecordOp.META and meta_rec.chunks == ()

    # Unpublish: gone from every region; republish: back.
    db.execute("UPDATE documents SET status = 'draft' WHERE id = 'life'")
    converged(settings)
    assert all(not doc_rows(settings, r, "life") for r in settings.regions)
    db.execute("UPDATE documents SET status = 'published' WHERE id = 'life'")
    converged(settings)
    assert all(doc_rows(settings, r, "life") for r in settings.regions)

    # Delete (+ Debezium's tombstone).
    db.execute("DELETE FROM documents WHERE id = 'life'")
    converged(settings)
    assert all(not doc_rows(settings, r, "life") for r in settings.regions)
    cdc = [m for m in read_topic(settings, settings.cdc_topic) if m.key() and b'"life"' in m.key()]
    assert cdc[-1].value() is None, "Debezium's tombstone follows the delete"
    for region in settings.regions:
        s = sink(settings, region)
        try:
            state = s.doc_state("life")
        finally:
            s.close()
        assert state is not None and state.deleted


def test_document_that_shrinks_loses_stale_chunks(settings: Settings, db: psycopg.Connection) -> None:
    paragraphs = "\n\n".join(doc.body[:380] for doc in CORPUS[10:15])
    db.execute("INSERT INTO documents (id, title, body) VALUES ('shrink', 'Shrinks', %s)", (paragraphs,))
    converged(settings)
    assert len(doc_rows(settings, "east", "shrink")) == 5
    db.execute("UPDATE documents SET body = 'Now a single short paragraph.' WHERE id = 'shrink'")
    converged(settings)
    for region in settings.regions:
        rows = doc_rows(settings, region, "shrink")
        assert [r["chunk_index"] for r in rows] == [0]
        assert rows[0]["text"] == "Now a single short paragraph."


def test_duplicates_and_out_of_order_events_leave_the_newest(settings: Settings, db: psycopg.Connection) -> None:
    db.execute("INSERT INTO documents (id, title, body) VALUES ('dup', 'Dup', 'first version of the text')")
    db.execute("UPDATE documents SET body = 'second version of the text' WHERE id = 'dup'")
    converged(settings)
    # Re-deliver the old Debezium events (insert, then update) after the newer ones, like a
    # connector restart or a consumer rebalance would.
    old = [m for m in read_topic(settings, settings.cdc_topic) if m.key() and b'"dup"' in m.key()]
    producer = Producer({"bootstrap.servers": settings.kafka_bootstrap})
    for msg in reversed(old):
        producer.produce(settings.cdc_topic, key=msg.key(), value=msg.value(), partition=msg.partition())
    producer.flush(10)
    # CMS producer: v5, then an older v3, then v5 again.
    pub = CmsPublisher(settings)
    doc = {"title": "CMS", "body": "cms version five", "tags": []}
    pub.publish([{"doc_id": "cms-ooo", "version": 5, "op": "upsert", "document": doc}])
    pub.publish([{"doc_id": "cms-ooo", "version": 3, "op": "upsert", "document": {**doc, "body": "cms version three"}}])
    pub.publish([{"doc_id": "cms-ooo", "version": 5, "op": "upsert", "document": doc}])
    # A later marker change: once it is indexed, everything before it on its partition was too.
    db.execute("INSERT INTO documents (id, title, body) VALUES ('dup-marker', 'M', 'marker')")
    wait_for(lambda: all(doc_rows(settings, r, "dup-marker") for r in settings.regions), 60, "marker")
    wait_for(lambda: all(doc_rows(settings, r, "cms-ooo") for r in settings.regions), 60, "cms doc")
    converged(settings, with_versions=True)
    for region in settings.regions:
        assert doc_rows(settings, region, "dup")[0]["text"] == "second version of the text"
        cms_rows = doc_rows(settings, region, "cms-ooo")
        assert cms_rows[0]["text"] == "cms version five" and cms_rows[0]["version"] == 5


def test_toast_placeholder_is_never_embedded(settings: Settings, db: psycopg.Connection) -> None:
    rng = random.Random(7)
    words = [doc.body.split()[0] for doc in CORPUS[:200] if doc.body.split()]
    # Incompressible enough to be TOASTed out of line (> 2 kB after compression).
    big = " ".join(rng.choice(words) + str(rng.randrange(10**6)) for _ in range(3000))
    db.execute("INSERT INTO documents (id, title, body) VALUES ('toast', 'Toast', %s)", (big,))
    converged(settings)
    before = doc_rows(settings, "east", "toast")
    # Without REPLICA IDENTITY FULL, Postgres does not send the unchanged TOASTed body.
    db.execute("ALTER TABLE documents REPLICA IDENTITY DEFAULT")
    try:
        db.execute("UPDATE documents SET title = 'Toast, renamed' WHERE id = 'toast'")
    finally:
        db.execute("ALTER TABLE documents REPLICA IDENTITY FULL")
    wait_for(lambda: all({r["title"] for r in doc_rows(settings, g, "toast")} == {"Toast, renamed"}
                         for g in settings.regions), 60, "title update")
    events = [orjson.loads(m.value()) for m in read_topic(settings, settings.cdc_topic)
              if m.key() and b'"toast"' in m.key() and m.value() is not None]
    # Debezium's reselect post processor put the unchanged body back before it reached Kafka.
    assert events[-1]["after"]["title"] == "Toast, renamed" and events[-1]["after"]["body"] == big
    for region in settings.regions:
        rows = doc_rows(settings, region, "toast")
        assert [r["text"] for r in rows] == [r["text"] for r in before]
        assert all(PLACEHOLDER not in r["text"] for r in rows)
    converged(settings)


def _big_body(rng: random.Random, tag: str) -> str:
    """A body stored out of line (TOASTed): incompressible enough to pass 2 kB after compression."""
    words = [doc.body.split()[0] for doc in CORPUS[:200] if doc.body.split()]
    return f"{tag} " + " ".join(rng.choice(words) + str(rng.randrange(10**6)) for _ in range(450))


def _assert_toasted(db: psycopg.Connection, doc_id: str) -> None:
    # Stored size after compression above Postgres' ~2 kB tuple threshold: the body lives out of
    # line, so an update that leaves it alone sends Debezium no value for it.
    size = db.execute("SELECT pg_column_size(body) FROM documents WHERE id = %s", (doc_id,)).fetchone()
    assert size is not None and size[0] > 2100, f"{doc_id}'s body is not TOASTed ({size})"


def _assert_regions_hold(settings: Settings, doc_ids: Sequence[str], model: Embedder) -> None:
    """Every region holds each document exactly as Postgres has it: chunk texts, title, tags, and
    vectors equal (within tolerance) to the model's embedding of each chunk; no placeholder."""
    expected = verify.expected_from_postgres(settings)
    for region in settings.regions:
        s = sink(settings, region)
        try:
            rows = [r for r in s.dump_chunks() if r["doc_id"] in set(doc_ids)]
        finally:
            s.close()
        by_doc: dict[str, list[dict]] = {}
        for row in rows:
            by_doc.setdefault(row["doc_id"], []).append(row)
        missing = [d for d in doc_ids if d not in by_doc]
        assert not missing, f"{region} lacks {missing}"
        for doc_id in doc_ids:
            exp, got = expected[doc_id], by_doc[doc_id]
            assert tuple(r["text"] for r in got) == exp.chunks, f"{region}: {doc_id} text"
            assert {r["title"] for r in got} == {exp.title}, f"{region}: {doc_id} title"
            assert {tuple(r["tags"]) for r in got} == {exp.tags}, f"{region}: {doc_id} tags"
            assert all(PLACEHOLDER not in r["text"] for r in got)
        vectors = model.embed([r["text"] for r in rows])
        assert vectors_close(np.stack([r["embedding"] for r in rows]), vectors), region


@contextmanager
def _north_loses(settings: Settings, db: psycopg.Connection, doc_id: str) -> Iterator[None]:
    """North loses ``doc_id`` (as after a lost index): a deleted marker at its current version.
    If the test fails before north healed, the document is sent again in full (a body change), so
    the drift does not leak into the module's later tests."""
    north = sink(settings, "north")
    try:
        north.apply([DocRecord(doc_id, None, RecordOp.DELETE, SourceRef("test", "t", 0, 0))])
        assert not [r for r in north.dump_chunks() if r["doc_id"] == doc_id]
    finally:
        north.close()
    try:
        yield
    except BaseException:
        db.execute("UPDATE documents SET body = body || ' (resent)' WHERE id = %s", (doc_id,))
        raise


def test_replica_identity_default_insert_then_tags_update_and_late_title_updates(
    settings: Settings, db: psycopg.Connection
) -> None:
    """Issue 7's data loss: under REPLICA IDENTITY DEFAULT an insert followed at once by a
    tags-only update must not leave the document out of any region."""
    rng = random.Random(11)
    fast = [f"ri-fast-{i}" for i in range(20)]
    late = [f"ri-late-{i}" for i in range(20)]
    for doc_id in late:
        db.execute("INSERT INTO documents (id, title, body, tags) VALUES (%s, %s, %s, %s)",
                   (doc_id, f"Late {doc_id}", _big_body(rng, doc_id), ["old"]))
    _assert_toasted(db, late[0])
    converged(settings, timeout=240)
    db.execute("ALTER TABLE documents REPLICA IDENTITY DEFAULT")
    try:
        # Separate commits (autocommit), no sleep: insert and tags-only update land in one batch.
        for doc_id in fast:
            db.execute("INSERT INTO documents (id, title, body, tags) VALUES (%s, %s, %s, %s)",
                       (doc_id, f"Fast {doc_id}", _big_body(rng, doc_id), ["new"]))
            db.execute("UPDATE documents SET tags = %s WHERE id = %s", (["new", "retagged"], doc_id))
        for doc_id in late:
            db.execute("UPDATE documents SET title = %s WHERE id = %s", (f"Late {doc_id}, renamed", doc_id))
    finally:
        db.execute("ALTER TABLE documents REPLICA IDENTITY FULL")
    converged(settings, timeout=240)
    model = embedder_from_settings(settings)
    _assert_regions_hold(settings, fast + late, model)


def test_without_reselection_the_agent_merges_and_a_region_that_lacks_a_document_heals(
    settings: Settings, db: psycopg.Connection
) -> None:
    """The change agent is safe on its own when placeholders do reach it (a connector without the
    reselect post processor): a text-less change never replaces the text before it in a batch, and
    a region that lacks a document asks for its whole state instead of only logging."""
    client = ConnectClient(settings.connect_url)
    config = load_connector_config(settings)
    without = {k: v for k, v in config.items() if k != "post.processors" and not k.startswith("reselector.")}
    rng = random.Random(12)
    healed, fast = "ri-heal", [f"ri-noreselect-{i}" for i in range(10)]
    db.execute("INSERT INTO documents (id, title, body, tags) VALUES (%s, %s, %s, %s)",
               (healed, "Heal me", _big_body(rng, healed), ["a"]))
    _assert_toasted(db, healed)
    converged(settings, timeout=240)
    with _north_loses(settings, db, healed):
        _tags_updates_without_reselection(settings, db, client, config, without, rng, healed, fast)
    events = [orjson.loads(m.value()) for m in read_topic(settings, settings.cdc_topic)
              if m.key() and f'"{healed}"'.encode() in m.key() and m.value() is not None]
    assert events[-1]["after"]["body"] == PLACEHOLDER, "the tags update really carried the placeholder"
    requests = [m for m in _heal_requests_from_north(settings) if m.key() == healed.encode()]
    assert requests, "north asked for the document it lacked"
    model = embedder_from_settings(settings)
    _assert_regions_hold(settings, [*fast, healed], model)


def _heal_requests_from_north(settings: Settings) -> list:
    """North's heal requests as the change agent reads them: north's indexer writes them to its
    own broker, the replicator brings them to the source's as ``north.<heal topic>``."""
    return list(read_topic(settings, policy.topic_in(settings.source_region, "north", settings.heal_topic)))


def _vectors(settings: Settings, region: str, doc_id: str) -> dict[int, bytes]:
    return {r["chunk_index"]: np.asarray(r["embedding"], dtype="<f4").tobytes() for r in doc_rows(settings, region, doc_id)}


def test_title_and_tags_changes_are_metadata_records_and_a_region_lacking_the_document_heals(
    settings: Settings, db: psycopg.Connection
) -> None:
    """A title or tags change carries no vectors across Kafka: each region re-labels its own chunks
    (their vectors stay bit for bit as that region stored them), under REPLICA IDENTITY FULL (old
    row) and DEFAULT (the agent's memory of its last record); a region that lacks the document
    asks for it and ends with it."""
    docs = ["meta-title", "meta-tags", "meta-lost"]
    for i, doc_id in enumerate(docs):
        db.execute("INSERT INTO documents (id, title, body, tags) VALUES (%s, %s, %s, %s)",
                   (doc_id, f"Title {doc_id}", CORPUS[10 + i].body + "\n\n" + CORPUS[20 + i].body, ["a"]))
    converged(settings)
    before = {(r, d): _vectors(settings, r, d) for r in settings.regions for d in docs}
    assert all(len(v) >= 2 for v in before.values())
    with _north_loses(settings, db, "meta-lost"):
        db.execute("UPDATE documents SET title = 'Renamed' WHERE id = 'meta-title'")
        db.execute("UPDATE documents SET tags = %s WHERE id = 'meta-tags'", (["a", "b"],))
        db.execute("UPDATE documents SET title = 'Lost, renamed' WHERE id = 'meta-lost'")
        converged(settings)
        db.execute("ALTER TABLE documents REPLICA IDENTITY DEFAULT")
        try:  # no old row now: the agent knows the text from the record it sent last
            db.execute("UPDATE documents SET tags = %s WHERE id = 'meta-title'", (["c"],))
        finally:
            db.execute("ALTER TABLE documents REPLICA IDENTITY FULL")
        converged(settings)

    for doc_id in ("meta-title", "meta-tags", "meta-lost"):
        newest = records_for(settings, doc_id)[-1]
        if doc_id != "meta-lost":
            assert newest.op is RecordOp.META and newest.chunks == () and newest.content_hash, doc_id
    title_recs = [r for r in records_for(settings, "meta-title") if r.op is RecordOp.META]
    assert len(title_recs) == 2, "both the FULL and the DEFAULT change went out without vectors"
    for region in settings.regions:
        assert {r["title"] for r in doc_rows(settings, region, "meta-title")} == {"Renamed"}
        assert {tuple(r["tags"]) for r in doc_rows(settings, region, "meta-title")} == {("c",)}
        assert {tuple(r["tags"]) for r in doc_rows(settings, region, "meta-tags")} == {("a", "b")}
        for doc_id in ("meta-title", "meta-tags"):
            assert _vectors(settings, region, doc_id) == before[(region, doc_id)], f"{region}: {doc_id} vectors moved"
        lost = doc_rows(settings, region, "meta-lost")
        assert lost and {r["title"] for r in lost} == {"Lost, renamed"}, region
    requests = [m for m in _heal_requests_from_north(settings) if m.key() == b"meta-lost"]
    assert requests, "north asked for the document it lacked"


def _tags_updates_without_reselection(
    settings: Settings, db: psycopg.Connection, client: ConnectClient, config: dict, without: dict,
    rng: random.Random, healed: str, fast: Sequence[str],
) -> None:
    client.apply(settings.connector_name, without)
    try:
        wait_for(lambda: "post.processors" not in _task_config(client, settings.connector_name), 60,
                 "connector task without the post processor")
        client.wait_running(settings.connector_name, timeout=120)
        db.execute("ALTER TABLE documents REPLICA IDENTITY DEFAULT")
        try:
            for doc_id in fast:
                db.execute("INSERT INTO documents (id, title, body, tags) VALUES (%s, %s, %s, %s)",
                           (doc_id, f"No reselect {doc_id}", _big_body(rng, doc_id), ["new"]))
                db.execute("UPDATE documents SET tags = %s WHERE id = %s", (["new", "retagged"], doc_id))
            db.execute("UPDATE documents SET tags = %s WHERE id = %s", (["a", "b"], healed))
        finally:
            db.execute("ALTER TABLE documents REPLICA IDENTITY FULL")
        converged(settings, timeout=240)
    finally:
        client.apply(settings.connector_name, config)
        client.wait_running(settings.connector_name, timeout=120)


def _task_config(client: ConnectClient, name: str) -> dict:
    tasks = client._request("GET", f"/connectors/{name}/tasks").json()
    return dict(tasks[0]["config"]) if tasks else {}


def test_poison_goes_to_the_dead_letter_topic_and_the_stream_goes_on(settings: Settings) -> None:
    producer = Producer({"bootstrap.servers": settings.kafka_bootstrap})
    too_big = {"doc_id": "big", "version": 1, "op": "upsert",
               "document": {"title": "big", "body": "x " * (settings.max_document_bytes // 2 + 10)}}
    poison = [
        (settings.cms_topic, b"p1", b"{not json", "unparseable_json"),
        (settings.cms_topic, b"p2", b"\xff\xfe\xfa", "invalid_utf8"),
        (settings.cms_topic, b"p3", orjson.dumps({"hello": "world"}), "wrong_envelope"),
        (settings.cdc_topic, None, orjson.dumps({"before": None, "after": {"title": "t", "body": "b"}, "op": "c",
                                                "source": {"lsn": 1}}), "missing_key"),
        (settings.cms_topic, b"big", orjson.dumps(too_big), "document_too_large"),
    ]
    where: dict[str, tuple[int, int]] = {}  # reason -> (partition, offset) the broker gave the record

    def delivered(reason: str) -> Callable[[Any, Any], None]:
        def record(err: Any, msg: Any) -> None:
            if err is None:
                where[reason] = (msg.partition(), msg.offset())
        return record

    for topic, key, value, reason in poison:
        producer.produce(topic, key=key, value=value, on_delivery=delivered(reason))
    assert producer.flush(10) == 0 and len(where) == len(poison)
    CmsPublisher(settings).publish([{"doc_id": "after-poison", "version": 1, "op": "upsert",
                                     "document": {"title": "ok", "body": "valid event after the poison"}}])
    wait_for(lambda: all(doc_rows(settings, r, "after-poison") for r in settings.regions), 60, "valid event")
    letters = [DeadLetter.from_bytes(m.value()) for m in read_topic(settings, settings.dlq_topic)]
    for topic, key, value, reason in poison:
        match = [d for d in letters if d.reason == reason and d.value == value and d.topic == topic]
        assert match, f"no dead letter for {reason}"
        assert match[0].key == key and (match[0].partition, match[0].offset) == where[reason] and match[0].detail


def _mixed_changes(settings: Settings, n: int, seed: int, progress: threading.Event | None = None) -> None:
    rng = random.Random(seed)
    ids = [f"mix-{i}" for i in range(150)]
    live: set[str] = set()
    with psycopg.connect(settings.pg_dsn()) as conn:
        for i in range(n):
            doc_id = rng.choice(ids)
            text = rng.choice(CORPUS).body
            if doc_id not in live:
                conn.execute("INSERT INTO documents (id, title, body, tags) VALUES (%s, %s, %s, %s) "
                             "ON CONFLICT (id) DO UPDATE SET body = excluded.body, status = 'published'",
                             (doc_id, f"Mixed {doc_id}", text, [f"t{i % 3}"]))
                live.add(doc_id)
            else:
                op = rng.random()
                if op < 0.45:
                    conn.execute("UPDATE documents SET body = %s WHERE id = %s", (text, doc_id))
                elif op < 0.65:
                    conn.execute("UPDATE documents SET title = %s, tags = %s WHERE id = %s",
                                 (f"Title {i}", [f"t{i % 5}"], doc_id))
                elif op < 0.8:
                    conn.execute("UPDATE documents SET status = %s WHERE id = %s",
                                 (rng.choice(["draft", "published"]), doc_id))
                else:
                    conn.execute("DELETE FROM documents WHERE id = %s", (doc_id,))
                    live.discard(doc_id)
            if i % 25 == 0:
                conn.commit()
                if progress is not None and i >= 100:
                    progress.set()
        conn.commit()


def test_1000_mixed_changes_end_with_every_region_equal_to_postgres(settings: Settings) -> None:
    _mixed_changes(settings, 1000, seed=1)
    reports = converged(settings, timeout=240, with_versions=True)
    assert all(r.documents > 50 for r in reports.values())
    model = embedder_from_settings(settings)
    model.embed(["warm up"])
    expected = verify.expected_state(settings, with_versions=True)
    for region in settings.regions:
        report = verify.region_report(settings, region, expected, embed=model.embed)
        assert report.matches, "\n".join(report.differences[:20])


def test_a_stopped_region_does_not_hold_back_the_other_and_catches_up(settings: Settings, db: psycopg.Connection) -> None:
    milvus.stop(settings, "north")
    try:
        for i in range(20):
            db.execute("INSERT INTO documents (id, title, body) VALUES (%s, %s, %s)",
                       (f"outage-{i}", f"Outage {i}", CORPUS[50 + i].body))
        reports = verify.wait_converged(settings, regions=["east"], timeout=90)
        assert reports["east"].matches, reports["east"].differences[:10]
        assert procs.read_proc(settings.state_dir, stack.indexer_name("north")).alive()  # type: ignore[union-attr]
    finally:
        milvus.start(settings, "north")
    converged(settings, timeout=120, with_versions=True)


def test_kill_9_of_the_change_agent_mid_stream_loses_nothing(settings: Settings) -> None:
    progress = threading.Event()
    writer = threading.Thread(target=_mixed_changes, args=(settings, 400, 2, progress))
    writer.start()
    assert progress.wait(60), "the writer made no progress"
    procs.kill9(settings.state_dir, stack.CHANGES)
    writer.join()
    stack.start_changes_worker(settings)
    converged(settings, timeout=240, with_versions=True)



def test_two_change_agents_and_two_indexers_per_region_converge_like_one_of_each(settings: Settings) -> None:
    """Scaling out on one machine: a second change agent and a second indexer per region join the
    same groups; the partitions are shared, and the index ends equal to the source, as with one."""
    extra = ["changes-2", *(f"{stack.indexer_name(r)}-2" for r in settings.regions)]
    procs.spawn(settings.state_dir, "changes-2", [sys.executable, "-m", "streams.app"], env=settings.child_env())
    for region in settings.regions:
        procs.spawn(settings.state_dir, f"{stack.indexer_name(region)}-2",
                    [sys.executable, "-m", "indexer.worker", "--region", region], env=settings.child_env())
    logs = settings.state_dir / "logs"
    try:
        # Both agents in the group (each was given partitions) before the load starts.
        wait_for(lambda: "Setting newly assigned partitions" in _log(logs / "changes-2.log"), 120,
                 "the second agent's assignment")
        _mixed_changes(settings, 600, seed=3)
        converged(settings, timeout=300, with_versions=True)
    finally:
        for name in extra:
            procs.stop(settings.state_dir, name)
    agents = {name: _log(logs / f"{name}.log").count("batch:") for name in (stack.CHANGES, "changes-2")}
    assert all(n > 0 for n in agents.values()), f"both agents worked: {agents}"
    for region in settings.regions:
        stopped = _log(logs / f"{stack.indexer_name(region)}-2.log")
        applied = re.search(r"stopped: WorkerStats\(batches=\d+, records=(\d+)", stopped)
        assert applied and int(applied.group(1)) > 0, f"the second {region} indexer applied records"
    model = embedder_from_settings(settings)
    expected = verify.expected_state(settings, with_versions=True)
    for region in settings.regions:
        report = verify.region_report(settings, region, expected, embed=model.embed)
        assert report.matches, "\n".join(report.differences[:20])


def _log(path: Path) -> str:
    return path.read_text(errors="replace") if path.exists() else ""

def test_no_secret_in_any_log_line(settings: Settings) -> None:
    """Runs last in this module: every process of the stack has logged by now."""
    secret = settings.pg_password.get_secret_value()
    logs = list((settings.state_dir / "logs").glob("*.log"))
    assert len(logs) >= 5
    for path in logs:
        assert secret not in path.read_text(errors="replace"), f"the Postgres password appears in {path.name}"
