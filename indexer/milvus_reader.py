"""Reads of a region's Milvus: rows by id, bookkeeping, scans and search (:class:`IndexReader`).

The region service, the drills and the bench only read; the indexer's :class:`RegionSink` reads
its bookkeeping through the same reader before it writes. Errors are the connection's
(:mod:`indexer.milvus_conn`): ``RegionUnavailable`` while Milvus does not answer, ``SinkError``
for any other Milvus error.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any

import numpy as np
from pymilvus import MilvusClient

from indexer.errors import SinkError
from indexer.milvus_conn import MilvusConnection
from indexer.plan import DocState
from indexer.ports import Hit
from indexer.rows import CHUNK_FIELDS, VERSION_FIELDS, state_of_row
from indexer.schema import METRIC, versions_collection

if TYPE_CHECKING:
    from regionsync.settings import Settings

ID_BATCH = 1000  # ids per get call


class MilvusIndexReader:
    """One region's Milvus, read-only. Built on a connection it owns (:meth:`for_region`) or one
    it shares with a writer (then the writer closes it)."""

    def __init__(self, conn: MilvusConnection, uri: str, collection: str, dim: int, timeout_s: float,
                 owns_connection: bool = True) -> None:
        self._conn = conn
        self.uri = uri
        self.collection = collection
        self.versions = versions_collection(collection)
        self.dim = dim
        self.timeout_s = timeout_s
        self._owns = owns_connection

    @classmethod
    def for_region(cls, settings: Settings, region: str, timeout_s: float = 10.0,
                   load_timeout_s: float = 300.0) -> MilvusIndexReader:
        part = settings.milvus(region)
        conn = MilvusConnection(part.uri, part.token.get_secret_value(), part.collection, part.dim, timeout_s,
                                load_timeout_s, 3)
        return cls(conn, part.uri, part.collection, part.dim, timeout_s)

    def ping(self) -> None:
        """Raise RegionUnavailable unless Milvus answers (and the collections are ready)."""
        self._conn.call(lambda mc: mc.list_collections(timeout=self.timeout_s))

    def close(self) -> None:
        if self._owns:
            self._conn.close()

    def get_rows(self, collection: str, ids: Sequence[str], fields: list[str]) -> dict[str, dict[str, Any]]:
        pk = "id" if collection == self.collection else "doc_id"
        out: dict[str, dict[str, Any]] = {}
        for start in range(0, len(ids), ID_BATCH):
            part = list(ids[start : start + ID_BATCH])

            def get(mc: MilvusClient, part: list[str] = part) -> Any:
                return mc.get(collection, ids=part, output_fields=fields, timeout=self.timeout_s)

            found = self._conn.call(get)
            for row in found:
                out[str(row[pk])] = dict(row)
        return out

    def get_states(self, doc_ids: Sequence[str]) -> dict[str, DocState]:
        return {doc_id: state_of_row(row) for doc_id, row in self.get_rows(self.versions, doc_ids, VERSION_FIELDS).items()}

    def doc_state(self, doc_id: str) -> DocState | None:
        return self.get_states([doc_id]).get(doc_id)

    def doc_states(self) -> dict[str, DocState]:
        """Every bookkeeping row: doc_id -> (version, content_hash, n_chunks, deleted)."""
        return {str(row["doc_id"]): state_of_row(row) for row in self._scan(self.versions, VERSION_FIELDS)}

    def dump_chunks(self, on_page: Callable[[int], None] | None = None) -> list[dict[str, Any]]:
        """Every chunk row, vectors included (float32 arrays), sorted by (doc_id, chunk_index).
        ``on_page(n)`` is called after each page of ``n`` rows (a progress bar on long scans)."""
        rows = []
        for row in self._scan(self.collection, CHUNK_FIELDS, on_page=on_page):
            row = dict(row)
            row["embedding"] = np.asarray(row["embedding"], dtype=np.float32)
            row["tags"] = list(row.get("tags") or [])
            rows.append(row)
        rows.sort(key=lambda r: (r["doc_id"], r["chunk_index"]))
        return rows

    def count(self) -> int:
        """Number of chunk rows."""
        res = self._conn.call(
            lambda mc: mc.query(self.collection, filter="", output_fields=["count(*)"], timeout=self.timeout_s)
        )
        return int(res[0]["count(*)"])

    def _scan(
        self, collection: str, fields: list[str], batch: int = 1000, on_page: Callable[[int], None] | None = None
    ) -> list[dict[str, Any]]:
        def scan(mc: MilvusClient) -> list[dict[str, Any]]:
            it = mc.query_iterator(collection, batch_size=batch, filter="", output_fields=fields, timeout=self.timeout_s)
            out: list[dict[str, Any]] = []
            try:
                while True:
                    page = it.next()
                    if not page:
                        return out
                    out.extend(dict(r) for r in page)
                    if on_page is not None:
                        on_page(len(page))
            finally:
                it.close()

        return self._conn.call(scan)

    def search(self, vector: np.ndarray | Sequence[float], k: int = 5, where: str = "") -> list[Hit]:
        """Top-``k`` chunks by cosine similarity to ``vector`` (score 1.0 = same direction),
        among the rows matching the Milvus boolean expression ``where`` (all when empty)."""
        query = np.asarray(vector, dtype=np.float32)
        if query.shape != (self.dim,):
            raise SinkError(f"query vector has shape {query.shape}, region expects ({self.dim},)")
        fields = ["doc_id", "chunk_index", "title", "text", "version", "source", "tags", "status"]
        res = self._conn.call(
            lambda mc: mc.search(
                self.collection,
                data=[query],
                limit=k,
                filter=where,
                output_fields=fields,
                search_params={"metric_type": METRIC},  # FLAT: exact, nothing to tune
                timeout=self.timeout_s,
            )
        )
        hits = []
        for hit in res[0] if res else []:
            ent = hit["entity"]
            hits.append(
                Hit(
                    doc_id=str(ent["doc_id"]),
                    chunk_index=int(ent["chunk_index"]),
                    title=str(ent["title"]),
                    text=str(ent["text"]),
                    score=float(hit["distance"]),
                    version=int(ent["version"]),
                    source=dict(ent.get("source") or {}),
                    tags=tuple(ent.get("tags") or ()),
                    status=str(ent.get("status") or ""),
                )
            )
        return hits
