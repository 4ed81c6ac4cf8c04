import dataclasses

import numpy as np
import orjson
from hypothesis import given
from hypothesis import strategies as st

from regionsync.settings import PLACEHOLDER, Settings
from streams import debezium
from streams.capture import CaptureSpec
from streams.chunking import chunk_text
from streams.decide import newest_per_document, unchanged_text
from streams.events import ChangeKind, DocRecord, DocumentChange, RecordOp, SourceRef, content_hash
from streams.processor import ChangeProcessor, RawMessage

from .fakes import FakeEmbedder, ListOutput


@given(st.text(min_size=0, max_size=5000), st.integers(50, 1000))
def test_chunks_respect_size_and_cover_all_words(text, size):
    chunks = chunk_text(text, size=size, overlap=size // 8)
    assert all(0 < len(c) <= size for c in chunks)
    joined = " ".join(chunks)
    for word in text.split():
        if len(word) <= size // 2:
            assert word in joined
    assert chunk_text(text, size=size, overlap=size // 8) == chunks  # deterministic


def ch(doc, version, kind=ChangeKind.UPSERT, offset=0):
    return DocumentChange(doc, version, kind, SourceRef("cms", "t", 0, offset), text="x")


def test_newest_per_document_keeps_highest_version_and_ignores_tombstone_after_delete():
    batch = [ch("a", 5), ch("b", 1), ch("a", 3), ch("a", 5, offset=9), ch("b", None, ChangeKind.DELETE)]
    out = newest_per_document(batch)
    assert [c.doc_id for c in out] == ["a", "b"]
    assert out[0].version == 5 and out[0].source.offset == 9
    assert out[1].version == 1
    assert newest_per_document([ch("c", None, ChangeKind.DELETE)])[0].version is None


def test_record_codec_roundtrip_is_exact():
    vec = np.random.default_rng(1).standard_normal(384).astype(np.float32)
    from streams.events import Chunk

    rec = DocRecord("d", 9, RecordOp.UPSERT, SourceRef("debezium", "t", 1, 2, lsn=3), "h", "T", ("x",), "published",
                    (Chunk(0, "text", vec),), 1, 10)
    back = DocRecord.from_bytes(rec.to_bytes())
    assert back == rec
    assert np.array_equal(back.chunks[0].embedding, vec)


def _cms(doc, version, body=None, op="upsert", title="T", offset=0):
    import orjson

    value = {"doc_id": doc, "version": version, "op": op}
    if op == "upsert":
        value["document"] = {"title": title, "body": body, "tags": []}
    return RawMessage("regionsync.cms.documents", 0, offset, doc.encode(), orjson.dumps(value))


def test_processor_embeds_only_changed_text_and_dead_letters_poison():
    settings = Settings(chunk_size=60, chunk_overlap=10)
    emb, out = FakeEmbedder(), ListOutput()
    proc = ChangeProcessor(settings, emb, out, clock=lambda: 1.0)
    body = "First paragraph about billing.\n\nSecond paragraph about refunds and more words here."
    r1 = proc.process([_cms("a", 1, body), RawMessage("regionsync.cms.documents", 0, 1, b"z", b"{bad")])
    assert r1.embedded == 2 and len(out.records) == 1 and out.records[0].embedded == 2
    assert [d.reason for d in out.dead] == ["unparseable_json"] and out.dead[0].value == b"{bad"
    # Title-only change: same text as the record just sent, so a metadata record without vectors
    # that names the text's hash; nothing embedded, nothing even looked up.
    r2 = proc.process([_cms("a", 2, body, title="New title", offset=2)])
    assert r2.embedded == 0 and r2.cached == 0 and r2.metadata_only == 1 and len(emb.calls) == 1
    rec = out.records[-1]
    assert rec.op is RecordOp.META and rec.title == "New title" and rec.chunks == () and rec.version == 2
    assert rec.content_hash == out.records[0].content_hash
    r3 = proc.process([_cms("a", 3, op="delete", offset=3)])
    assert out.records[-1].op is RecordOp.DELETE and r3.embedded == 0
    # After the delete the agent no longer assumes the regions hold the text: a full record.
    r4 = proc.process([_cms("a", 4, body, offset=4)])
    assert out.records[-1].op is RecordOp.UPSERT and len(out.records[-1].chunks) == 2 and r4.cached == 2
    assert out.flushes == 4


def test_unchanged_text_is_known_from_the_old_row_or_the_last_record_never_for_a_heal():
    text = "the body"
    digest = content_hash(text)
    src = SourceRef("debezium", "t", 0, 1, lsn=5, op="u")
    change = DocumentChange("a", 5, ChangeKind.UPSERT, src, title="T", text=text)
    assert unchanged_text(change, None) is None  # nothing known: a full record
    assert unchanged_text(change, digest) == digest  # the agent's last record had this text
    assert unchanged_text(dataclasses.replace(change, previous_hash=digest), None) == digest  # Debezium's before
    assert unchanged_text(dataclasses.replace(change, previous_hash="other"), "other") is None  # text changed
    healed = dataclasses.replace(change, source=dataclasses.replace(src, op="heal"), previous_hash=digest)
    assert unchanged_text(healed, digest) is None
    assert unchanged_text(dataclasses.replace(change, text=None), digest) is None  # TOAST: no text at all


def test_the_old_row_counts_only_for_the_first_change_of_a_batch():
    # v1 replaced text X with A, v2 replaced A with X: the regions hold X, v1 never reached them.
    x, a = content_hash("X"), content_hash("A")
    v1 = DocumentChange("d", 1, ChangeKind.UPSERT, SourceRef("debezium", "t", 0, 1), text="A", previous_hash=x)
    v2 = DocumentChange("d", 2, ChangeKind.UPSERT, SourceRef("debezium", "t", 0, 2), text="X", previous_hash=a)
    (winner,) = newest_per_document([v1, v2])
    assert winner.version == 2 and winner.previous_hash == x and unchanged_text(winner, None) == x
    # Inserted within the batch: no region holds any text of it.
    ins = DocumentChange("e", 1, ChangeKind.UPSERT, SourceRef("debezium", "t", 0, 1), text="A")
    upd = dataclasses.replace(v2, doc_id="e", text="A", previous_hash=a)
    assert unchanged_text(newest_per_document([ins, upd])[0], None) is None


def test_debezium_before_image_gives_the_previous_hash_only_when_complete_and_published():
    import orjson

    spec = CaptureSpec()

    def event(before):
        env = {"op": "u", "source": {"lsn": 7}, "before": before,
               "after": {"id": "a", "title": "New", "body": "same text", "status": "published"}}
        return debezium.parse(orjson.dumps({"id": "a"}), orjson.dumps(env), spec, "t", 0, 1)

    assert event({"id": "a", "title": "Old", "body": "same text", "status": "published"}).previous_hash == \
        content_hash("same text")
    assert event({"id": "a", "title": "Old", "body": "same text", "status": "draft"}).previous_hash is None
    assert event({"id": "a"}).previous_hash is None  # REPLICA IDENTITY DEFAULT: key only
    assert event(None).previous_hash is None
    assert event({"id": "a", "body": PLACEHOLDER, "status": "published"}).previous_hash is None


def _text_less(doc, version, offset=0, tags=("new",)):
    return DocumentChange(doc, version, ChangeKind.UPSERT, SourceRef("debezium", "t", 0, offset), title="T",
                          text=None, tags=tags)


def test_a_text_less_change_is_merged_with_the_text_before_it_never_replaces_it():
    insert = DocumentChange("a", 10, ChangeKind.UPSERT, SourceRef("debezium", "t", 0, 1), title="T", text="body")
    out = newest_per_document([insert, _text_less("a", 11, offset=2), _text_less("a", 12, offset=3, tags=("x",))])
    assert len(out) == 1
    assert (out[0].text, out[0].version, out[0].tags, out[0].source.offset) == ("body", 12, ("x",), 3)
    # Nothing to merge with: the text stays unknown (a meta record); after a delete, too.
    assert newest_per_document([_text_less("b", 5)])[0].text is None
    gone = DocumentChange("c", 4, ChangeKind.DELETE, SourceRef("debezium", "t", 0, 1))
    assert newest_per_document([gone, _text_less("c", 5)])[0].text is None
    # A newer change with its own text keeps its own text.
    newer = DocumentChange("a", 11, ChangeKind.UPSERT, SourceRef("debezium", "t", 0, 2), text="new body")
    assert newest_per_document([insert, newer])[0].text == "new body"


class FakeSourceRows:
    def __init__(self, rows):
        self.rows = rows
        self.asked: list[list[str]] = []

    def fetch(self, doc_ids):
        self.asked.append(list(doc_ids))
        return {d: self.rows[d] for d in doc_ids if d in self.rows}


def _heal_msg(doc, version, region="north", kind="debezium", offset=0):
    from streams.heal import HealRequest

    req = HealRequest(doc, version, kind, region, 1)
    return RawMessage(Settings().heal_topic, 0, offset, doc.encode(), req.to_bytes())


def test_heal_requests_become_whole_documents_read_from_the_source():
    settings = Settings(chunk_size=60, chunk_overlap=10)
    rows = FakeSourceRows({
        "a": {"id": "a", "title": "A", "body": "the whole text of a", "tags": ["t"], "status": "published"},
        "u": {"id": "u", "title": "U", "body": "hidden", "tags": [], "status": "draft"},
    })
    emb, out = FakeEmbedder(), ListOutput()
    proc = ChangeProcessor(settings, emb, out, clock=lambda: 1.0, source_rows=rows)
    result = proc.process([
        _heal_msg("a", 40), _heal_msg("a", 42, region="east", offset=1),  # two regions ask: one read
        _heal_msg("gone", 7, offset=2),  # deleted at the source since: its delete event follows
        _heal_msg("u", 8, offset=3),  # unpublished at the source: removed at that version
        _heal_msg("cms-doc", 3, kind="cms", offset=4),  # no lookup for the CMS topic: said so
        RawMessage(settings.heal_topic, 0, 5, b"x", b"{not json"),
    ])
    assert rows.asked == [["a", "gone", "u"]]
    by_doc = {r.doc_id: r for r in out.records}
    assert set(by_doc) == {"a", "u"} and result.healed == 2
    a = by_doc["a"]
    assert a.op is RecordOp.UPSERT and a.version == 42 and a.tags == ("t",) and a.source.op == "heal"
    assert [c.text for c in a.chunks] == ["the whole text of a"] and a.embedded == 1
    assert by_doc["u"].op is RecordOp.DELETE and by_doc["u"].version == 8
    assert sorted(d.reason for d in out.dead) == ["unhealable", "unparseable_json"]


def test_a_heal_and_the_text_less_change_it_answers_make_one_whole_record():
    settings = Settings(chunk_size=60, chunk_overlap=10)
    rows = FakeSourceRows({"a": {"id": "a", "title": "A", "body": "text of a", "tags": ["t"], "status": "published"}})
    out = ListOutput()
    proc = ChangeProcessor(settings, FakeEmbedder(), out, clock=lambda: 1.0, source_rows=rows)
    meta_event = orjson.dumps({
        "op": "u", "source": {"lsn": 42, "ts_ms": 1},
        "after": {"id": "a", "title": "A2", "body": PLACEHOLDER, "tags": ["t", "u"], "status": "published"},
    })
    proc.process([_heal_msg("a", 42), RawMessage(settings.cdc_topic, 0, 9, b'{"id": "a"}', meta_event)])
    (rec,) = out.records
    assert rec.op is RecordOp.UPSERT and rec.version == 42 and rec.title == "A2" and rec.tags == ("t", "u")
    assert [c.text for c in rec.chunks] == ["text of a"]


class FakeSourceEvents:
    def __init__(self, events):
        self.events = events
        self.asked: list[list[tuple[str, int, int]]] = []

    def fetch(self, coordinates):
        self.asked.append(list(coordinates))
        return {c: self.events[c] for c in coordinates if c in self.events}


def test_a_cms_document_is_healed_from_its_own_event_read_again():
    from streams.heal import HealRequest

    settings = Settings(chunk_size=60, chunk_overlap=10)
    topic = settings.cms_topic
    v3 = _cms("doc", 3, "the whole text of doc", title="Doc")
    v5 = _cms("other", 5, "other text")
    events = FakeSourceEvents({(topic, 0, 10): (v3.key, v3.value), (topic, 0, 11): (v5.key, v5.value)})
    out = ListOutput()
    proc = ChangeProcessor(settings, FakeEmbedder(), out, clock=lambda: 1.0, source_events=events)

    def ask(doc, version, offset, msg_offset):
        req = HealRequest(doc, version, "cms", "north", 1, topic=topic, partition=0, offset=offset)
        return RawMessage(settings.heal_topic, 0, msg_offset, doc.encode(), req.to_bytes())

    result = proc.process([
        ask("doc", 3, 10, 0),
        ask("other", 4, 11, 1),  # the event there is another version: cannot heal v4 from it
        ask("lost", 2, 12, 2),  # gone from the topic (retention)
    ])
    (rec,) = out.records
    assert rec.doc_id == "doc" and rec.op is RecordOp.UPSERT and rec.version == 3 and rec.source.op == "heal"
    assert [c.text for c in rec.chunks] == ["the whole text of doc"] and result.healed == 1
    assert sorted(d.reason for d in out.dead) == ["unhealable", "unhealable"]
    assert {d.offset for d in out.dead} == {1, 2}
