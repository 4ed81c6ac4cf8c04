import numpy as np
from hypothesis import given
from hypothesis import strategies as st

from regionsync.settings import Settings
from streams.chunking import chunk_text
from streams.decide import newest_per_document
from streams.events import ChangeKind, DocRecord, DocumentChange, RecordOp, SourceRef
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
    # Title-only change: same text, every vector comes from the cache.
    r2 = proc.process([_cms("a", 2, body, title="New title", offset=2)])
    assert r2.embedded == 0 and r2.cached == 2
    rec = out.records[-1]
    assert rec.op is RecordOp.UPSERT and rec.title == "New title" and rec.embedded == 0 and rec.version == 2
    assert rec.content_hash == out.records[0].content_hash
    r3 = proc.process([_cms("a", 3, op="delete", offset=3)])
    assert out.records[-1].op is RecordOp.DELETE and r3.embedded == 0
    assert out.flushes == 3
