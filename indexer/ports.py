"""What the workers and the region service need of a region's vector index, as protocols.

The indexer writes through an :class:`IndexWriter` (apply a batch of doc records, never moving a
document backwards); the region service, the drills and the bench read through an
:class:`IndexReader` (search, scans, bookkeeping). :class:`indexer.sink.RegionSink` and
:class:`indexer.milvus_reader.MilvusIndexReader` are the Milvus implementations; a fake (tests)
implements the same protocols, and one contract test (tests/indexer/test_index_contract.py) runs
the same cases against both, so a fake cannot drift from what Milvus does.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

import numpy as np

from indexer.plan import DocState
from streams.events import DocRecord


@dataclass(frozen=True)
class Hit:
    doc_id: str
    chunk_index: int
    title: str
    text: str
    score: float
    version: int
    source: dict[str, Any]
    tags: tuple[str, ...] = ()
    status: str = ""


@dataclass
class ApplyStats:
    records: int = 0
    documents: int = 0
    upserted: int = 0  # documents whose chunks were (re)written
    relabelled: int = 0  # documents whose stored chunks got new metadata (meta records)
    deleted: int = 0  # documents removed (delete records and tombstones)
    stale: int = 0  # records skipped: version not newer than what the region holds
    meta_missing: list[str] = field(default_factory=list)  # meta records with no chunks to relabel
    # Those meta records themselves: the region lacks these documents and must be healed.
    heal: list[DocRecord] = field(default_factory=list)
    chunks_written: int = 0
    stale_ids_deleted: int = 0  # chunk ids sent for deletion (ids that did not exist included)
    seconds: float = 0.0


class IndexReader(Protocol):
    """Reads of one region's index. Every method raises ``RegionUnavailable`` while the index
    does not answer."""

    dim: int

    def ping(self) -> None:
        """Return once the index answers."""

    def search(self, vector: np.ndarray | Sequence[float], k: int = 5, where: str = "") -> list[Hit]:
        """Top-``k`` chunks by cosine similarity (1.0 = same direction), best first."""

    def doc_state(self, doc_id: str) -> DocState | None:
        """The document's bookkeeping (version, content hash, chunks, deleted), None if never seen."""

    def doc_states(self) -> dict[str, DocState]:
        """Every document's bookkeeping, deleted markers included."""

    def dump_chunks(self, on_page: Callable[[int], None] | None = None) -> list[dict[str, Any]]:
        """Every chunk row, vectors included, sorted by (doc_id, chunk_index)."""

    def count(self) -> int:
        """Number of chunk rows."""

    def close(self) -> None: ...


class IndexWriter(Protocol):
    """Writes of one region's index: idempotent, version-guarded (:mod:`indexer.plan`)."""

    dim: int

    def apply(self, records: Sequence[DocRecord]) -> ApplyStats:
        """Apply a batch in log order; a record not newer than the stored version is skipped.
        Raises ``InvalidRecord`` before writing anything for a record that can never apply."""

    def flush(self) -> None:
        """Make what was written durable and searchable (may be a no-op)."""

    def ping(self) -> None: ...

    def close(self) -> None: ...
