"""Drift made on purpose: a region's Milvus changed behind the pipeline's back."""

from __future__ import annotations

from indexer.sink import RegionSink
from regionsync.settings import Settings
from streams.events import Chunk, DocRecord, RecordOp, SourceRef, chunk_id


def drop_document(settings: Settings, region: str, doc_id: str) -> None:
    """The region forgets the document entirely (chunks and bookkeeping), as after a lost index."""
    sink = RegionSink.for_region(settings, region)
    try:
        state = sink.doc_state(doc_id)
        n = state.n_chunks if state else 64
        sink._delete_ids([chunk_id(doc_id, i) for i in range(n)])
        sink._call(lambda mc: mc.delete(sink.versions, ids=[doc_id]))
        sink.flush()
    finally:
        sink.close()


def drop_chunk(settings: Settings, region: str, doc_id: str, index: int) -> None:
    sink = RegionSink.for_region(settings, region)
    try:
        sink._delete_ids([chunk_id(doc_id, index)])
        sink.flush()
    finally:
        sink.close()


def make_stale(settings: Settings, region: str, doc_id: str, old_title: str) -> None:
    """The region holds the document's chunks under an old title at an old version."""
    sink = RegionSink.for_region(settings, region)
    try:
        rows = [r for r in sink.dump_chunks() if r["doc_id"] == doc_id]
        assert rows, f"{region} does not hold {doc_id}"
        sink._call(lambda mc: mc.delete(sink.versions, ids=[doc_id]))
        record = DocRecord(
            doc_id, 1, RecordOp.UPSERT, SourceRef("test", "none", 0, 0), rows[0]["content_hash"], old_title,
            tuple(rows[0]["tags"]), "published",
            tuple(Chunk(int(r["chunk_index"]), str(r["text"]), r["embedding"]) for r in rows),
        )
        sink.apply([record])
        sink.flush()
    finally:
        sink.close()
