"""An in-memory region index for unit tests: the IndexWriter and IndexReader protocols
(indexer/ports.py) on dicts. It folds batches with the same pure plan (indexer.plan) and builds the
same rows (indexer.rows) as the Milvus sink; tests/indexer/test_index_contract.py runs the same
cases against it and a real Milvus, so it cannot drift from what Milvus does."""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

from indexer.plan import DocState, Relabel, Remove, Write, group_by_document, plan_document
from indexer.ports import ApplyStats, Hit
from indexer.rows import book_row, chunk_rows, relabelled_row, state_of_row
from indexer.schema import check_records
from streams.events import DocRecord, chunk_id


class FakeIndex:
    def __init__(self, dim: int = 384) -> None:
        self.dim = dim
        self.chunks: dict[str, dict[str, Any]] = {}
        self.book: dict[str, dict[str, Any]] = {}
        self.closed = False

    # ------------------------------------------------------------------ IndexWriter
    def apply(self, records: Sequence[DocRecord]) -> ApplyStats:
        stats = ApplyStats(records=len(records))
        check_records(records, self.dim)
        groups = group_by_document(records)
        stats.documents = len(groups)
        now_ms = int(time.time() * 1000)
        for doc_id, recs in groups.items():
            stored = self.doc_state(doc_id)
            plan = plan_document(doc_id, stored, recs)
            stats.stale += plan.stale
            if plan.meta_missing is not None:
                stats.meta_missing.append(doc_id)
                stats.heal.append(plan.meta_missing)
            effect = plan.effect
            if isinstance(effect, Write):
                rec = effect.record
                self._drop(doc_id, len(rec.chunks), plan.max_chunks)
                for row in chunk_rows(rec, now_ms):
                    self.chunks[row["id"]] = row
                self.book[doc_id] = book_row(doc_id, rec.version, rec.content_hash, len(rec.chunks), False, rec, now_ms)
                stats.upserted += 1
            elif isinstance(effect, Relabel):
                assert stored is not None
                ids = [chunk_id(doc_id, i) for i in range(stored.n_chunks)]
                if any(i not in self.chunks for i in ids):
                    stats.meta_missing.append(doc_id)
                    stats.heal.append(effect.meta)
                    continue
                for i in ids:
                    self.chunks[i] = relabelled_row(self.chunks[i], effect.meta, now_ms)
                content_hash = effect.meta.content_hash or stored.content_hash
                self.book[doc_id] = book_row(doc_id, effect.meta.version, content_hash, stored.n_chunks, False,
                                             effect.meta, now_ms)
                stats.relabelled += 1
            elif isinstance(effect, Remove):
                self._drop(doc_id, 0, plan.max_chunks)
                if effect.version is not None:
                    self.book[doc_id] = book_row(doc_id, effect.version, None, 0, True, effect.record, now_ms)
                stats.deleted += 1
        return stats

    def _drop(self, doc_id: str, keep: int, upto: int) -> None:
        for i in range(keep, upto):
            self.chunks.pop(chunk_id(doc_id, i), None)

    def flush(self) -> None:
        pass

    def ping(self) -> None:
        pass

    def close(self) -> None:
        self.closed = True

    # ------------------------------------------------------------------ IndexReader
    def search(self, vector: np.ndarray | Sequence[float], k: int = 5, where: str = "") -> list[Hit]:
        if where:
            raise NotImplementedError("the fake index does not evaluate Milvus filter expressions")
        query = np.asarray(vector, dtype=np.float32)
        scored = []
        for row in self.chunks.values():
            emb = np.asarray(row["embedding"], dtype=np.float32)
            score = float(query @ emb / ((np.linalg.norm(query) * np.linalg.norm(emb)) or 1.0))
            scored.append((score, row))
        scored.sort(key=lambda pair: -pair[0])
        return [Hit(doc_id=r["doc_id"], chunk_index=r["chunk_index"], title=r["title"], text=r["text"], score=s,
                    version=r["version"], source=dict(r["source"]), tags=tuple(r["tags"]), status=r["status"])
                for s, r in scored[:k]]

    def doc_state(self, doc_id: str) -> DocState | None:
        row = self.book.get(doc_id)
        return state_of_row(row) if row is not None else None

    def doc_states(self) -> dict[str, DocState]:
        return {doc_id: state_of_row(row) for doc_id, row in self.book.items()}

    def dump_chunks(self, on_page: Callable[[int], None] | None = None) -> list[dict[str, Any]]:
        rows = [dict(r) for r in self.chunks.values()]
        if on_page is not None:
            on_page(len(rows))
        return sorted(rows, key=lambda r: (r["doc_id"], r["chunk_index"]))

    def count(self) -> int:
        return len(self.chunks)
