"""The rows a region's Milvus holds for a document: its chunks (text, vector, metadata) and one
bookkeeping row (version, content hash, chunk count, deleted). Pure: built from doc records."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import numpy as np

from indexer.plan import DocState
from indexer.schema import DUMMY_VECTOR, MAX_TITLE
from streams.events import DocRecord, chunk_id, clip_utf8

CHUNK_FIELDS = [
    "id", "doc_id", "chunk_index", "version", "content_hash", "title", "text", "tags", "status",
    "source", "indexed_ms", "embedding",
]
VERSION_FIELDS = ["doc_id", "version", "content_hash", "n_chunks", "deleted", "source", "updated_ms"]


def chunk_rows(rec: DocRecord, now_ms: int) -> Iterator[dict[str, Any]]:
    assert rec.version is not None  # checked by record_problem
    title = clip_utf8(rec.title, MAX_TITLE)
    source = rec.source.to_dict()
    for chunk in rec.chunks:
        yield {
            "id": chunk_id(rec.doc_id, chunk.index),
            "doc_id": rec.doc_id,
            "chunk_index": chunk.index,
            "version": rec.version,
            "content_hash": rec.content_hash or "",
            "title": title,
            "text": chunk.text,
            "tags": [str(t) for t in rec.tags],
            "status": rec.status,
            "source": source,
            "indexed_ms": now_ms,
            "embedding": np.asarray(chunk.embedding, dtype=np.float32),
        }

def relabelled_row(row: dict[str, Any], meta: DocRecord, now_ms: int) -> dict[str, Any]:
    out = {name: row[name] for name in CHUNK_FIELDS}
    out.update(
        version=meta.version,
        title=clip_utf8(meta.title, MAX_TITLE),
        tags=[str(t) for t in meta.tags],
        status=meta.status,
        source=meta.source.to_dict(),
        indexed_ms=now_ms,
        embedding=np.asarray(row["embedding"], dtype=np.float32),
    )
    if meta.content_hash:
        out["content_hash"] = meta.content_hash
    return out


def book_row(
    doc_id: str, version: int | None, content_hash: str | None, n_chunks: int, deleted: bool, rec: DocRecord, now_ms: int
) -> dict[str, Any]:
    return {
        "doc_id": doc_id,
        "version": version,
        "content_hash": content_hash or "",
        "n_chunks": n_chunks,
        "deleted": deleted,
        "source": rec.source.to_dict(),
        "updated_ms": now_ms,
        "dummy": DUMMY_VECTOR,
    }


def state_of_row(row: dict[str, Any]) -> DocState:
    return DocState(
        version=int(row["version"]),
        content_hash=str(row["content_hash"]) or None,
        n_chunks=int(row["n_chunks"]),
        deleted=bool(row["deleted"]),
    )
