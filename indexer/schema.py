"""The two collections of a region's Milvus, and the checks a record must pass to fit them.

``documents``: one row per chunk, id = ``streams.events.chunk_id(doc_id, index)``.
``documents_versions``: one row per document: version, content hash, chunk count, deleted flag.
It lives in the same Milvus as the vectors, so the version guard describes exactly the index it
guards: restore or lose a region's Milvus and its bookkeeping goes with it (a separate store
could say "v7 indexed" about a Milvus that holds nothing).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import numpy as np
from pymilvus import DataType, MilvusClient

from indexer.errors import InvalidRecord
from streams.events import (
    MAX_DOC_ID_BYTES,
    MAX_STATUS_BYTES,
    MAX_TAG_BYTES,
    MAX_TAGS,
    MAX_TITLE_BYTES,
    DocRecord,
    RecordOp,
    utf8_len,
)

# Limits of the schema (Milvus counts VARCHAR max_length in UTF-8 bytes). Those a document's own
# fields must respect are the change agent's too (streams/events.py): one definition.
MAX_ID = 64
MAX_DOC_ID = MAX_DOC_ID_BYTES
MAX_HASH = 128
MAX_TITLE = MAX_TITLE_BYTES
MAX_TEXT = 65535
MAX_STATUS = MAX_STATUS_BYTES
MAX_TAG = MAX_TAG_BYTES

# Milvus wants a vector field in every collection; the bookkeeping rows carry this constant one.
DUMMY_DIM = 2
DUMMY_VECTOR = [1.0, 0.0]


def versions_collection(collection: str) -> str:
    return f"{collection}_versions"


def documents_schema(dim: int) -> Any:
    schema = MilvusClient.create_schema(auto_id=False, enable_dynamic_field=False)
    schema.add_field("id", DataType.VARCHAR, is_primary=True, max_length=MAX_ID)
    schema.add_field("doc_id", DataType.VARCHAR, max_length=MAX_DOC_ID)
    schema.add_field("chunk_index", DataType.INT64)
    schema.add_field("version", DataType.INT64)
    schema.add_field("content_hash", DataType.VARCHAR, max_length=MAX_HASH)
    schema.add_field("title", DataType.VARCHAR, max_length=MAX_TITLE)
    schema.add_field("text", DataType.VARCHAR, max_length=MAX_TEXT)
    schema.add_field("tags", DataType.ARRAY, element_type=DataType.VARCHAR, max_capacity=MAX_TAGS, max_length=MAX_TAG)
    schema.add_field("status", DataType.VARCHAR, max_length=MAX_STATUS)
    schema.add_field("source", DataType.JSON)
    schema.add_field("indexed_ms", DataType.INT64)
    schema.add_field("embedding", DataType.FLOAT_VECTOR, dim=dim)
    return schema


# FLAT (exact brute-force search), COSINE on unit vectors. The embedded C++ Milvus (milvus-lite
# 2.5.1) offers FLAT, IVF_FLAT and AUTOINDEX only, and at our sizes (300 to 20,000 documents of
# 2-3 chunks: at most ~60k rows of 384 dims, 92 MB) the others bought nothing there: top-5 search
# with a status filter at 60k rows, p50 25 ms FLAT vs 24 ms IVF_FLAT (nlist 128, nprobe 8) on this
# shared 2-core machine, and IVF_FLAT's recall@5 of 1.000 shows it too scanned everything (at 50k:
# FLAT 21, IVF_FLAT 26, AUTOINDEX 28 ms). The time is the scan itself (24 ms without filter or
# output fields). FLAT is exact, so every region answers the same query with the same hits, has no
# build step competing with writes for the two cores, and no parameters; a Milvus server (the
# production URI) supports it as well. A region that grows to millions of chunks wants HNSW on its
# server instead: the index is fixed when the collection is created.
DOCUMENTS_INDEX_TYPE = "FLAT"
METRIC = "COSINE"


def documents_index(client: MilvusClient) -> Any:
    params = client.prepare_index_params()
    params.add_index(field_name="embedding", index_type=DOCUMENTS_INDEX_TYPE, metric_type=METRIC)
    return params


def versions_schema() -> Any:
    schema = MilvusClient.create_schema(auto_id=False, enable_dynamic_field=False)
    schema.add_field("doc_id", DataType.VARCHAR, is_primary=True, max_length=MAX_DOC_ID)
    schema.add_field("version", DataType.INT64)
    schema.add_field("content_hash", DataType.VARCHAR, max_length=MAX_HASH)
    schema.add_field("n_chunks", DataType.INT64)
    schema.add_field("deleted", DataType.BOOL)
    schema.add_field("source", DataType.JSON)
    schema.add_field("updated_ms", DataType.INT64)
    schema.add_field("dummy", DataType.FLOAT_VECTOR, dim=DUMMY_DIM)
    return schema


def versions_index(client: MilvusClient) -> Any:
    params = client.prepare_index_params()
    params.add_index(field_name="dummy", index_type="FLAT", metric_type="L2")
    return params


_utf8_len = utf8_len


def check_records(records: Sequence[DocRecord], dim: int) -> None:
    """Raise :class:`InvalidRecord` for the first record of a batch that can never be applied:
    a sink checks the whole batch before it writes anything."""
    for rec in records:
        problem = record_problem(rec, dim)
        if problem:
            raise InvalidRecord(*problem)


def record_problem(record: DocRecord, dim: int) -> tuple[str, str] | None:
    """Why ``record`` can never be applied to a region, as (reason, detail); None if it can.

    A title that is too long is clipped rather than refused (it only labels the hit); anything
    that would change what is searched, or where, is refused.
    """
    if not record.doc_id or _utf8_len(record.doc_id) > MAX_DOC_ID:
        return "bad_doc_id", f"doc_id must be 1..{MAX_DOC_ID} bytes"
    if record.op is not RecordOp.DELETE and record.version is None:
        return "missing_version", f"{record.op.value} record without a version"
    if record.content_hash is not None and _utf8_len(record.content_hash) > MAX_HASH:
        return "bad_content_hash", "content_hash too long"
    if len(record.tags) > MAX_TAGS or any(_utf8_len(str(t)) > MAX_TAG for t in record.tags):
        return "tags_too_large", f"at most {MAX_TAGS} tags of {MAX_TAG} bytes"
    if _utf8_len(record.status) > MAX_STATUS:
        return "status_too_long", f"status over {MAX_STATUS} bytes"
    if record.op is RecordOp.UPSERT:
        indexes = [c.index for c in record.chunks]
        if indexes != list(range(len(indexes))):
            return "bad_chunk_indexes", f"chunk indexes must be 0..n-1 in order, got {indexes[:10]}"
        for chunk in record.chunks:
            vec = np.asarray(chunk.embedding)
            if vec.shape != (dim,):
                return "wrong_dim", f"chunk {chunk.index} vector has shape {vec.shape}, region expects ({dim},)"
            if not np.all(np.isfinite(vec)):
                return "non_finite_vector", f"chunk {chunk.index} vector has NaN/inf"
            if not math.isclose(float(np.linalg.norm(vec)), 1.0, abs_tol=1e-3):
                return "not_normalised", f"chunk {chunk.index} vector norm {float(np.linalg.norm(vec)):.4f}"
            if _utf8_len(chunk.text) > MAX_TEXT:
                return "chunk_too_large", f"chunk {chunk.index} text over {MAX_TEXT} bytes"
    return None


def filter_literal(value: str) -> str:
    """A Milvus filter-expression string literal for ``value`` (quotes and backslashes escaped)."""
    escaped = (
        value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n").replace("\r", "\\r").replace("\t", "\\t")
    )
    return f'"{escaped}"'
