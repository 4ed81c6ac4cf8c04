"""Row 5: the peer, i.e. what a user would build instead with LangChain's indexing API.

The peer is ``langchain_core.indexing.index()`` with LangChain's ``SQLRecordManager`` (on
SQLite, the setup LangChain documents, in-process and so the fastest for it), the
``langchain_milvus.Milvus`` vector store (langchain-milvus 0.4 works with pymilvus 3.0.2: no
adapter was needed) on the same Milvus server as our first region, with the same index (FLAT,
COSINE: ``indexer.schema``), and the same model, batch size and threads (:class:`ModelEmbeddings` wraps
:func:`embedding.runtime.embedder_from_settings`). Its documents are the same passages:
each published row's body cut by the same chunker, one LangChain ``Document`` per chunk with the
row id as ``source``.

A LangChain user has no change feed: to make the index reflect edits they re-run the pipeline
from the source of truth, i.e. read every row, split it, and call ``index()`` with
``cleanup="incremental"``, which hashes every chunk, skips the unchanged ones (refreshing their
timestamps in the record manager), embeds and writes the new ones and deletes the stale ones.
Its time is measured from the start of that re-run to its return, loading and splitting
included. ``batch_size=1000``: LangChain's own advice for incremental mode is "as big a batch
size as possible" (chunks of one source split across batches cause redundant work).

Seeding (not measured): the peer's initial index is built by the same ``index()`` call, but with
embeddings served from our pipeline's embedding cache, which holds the model's exact vectors
for every passage (vectors are bitwise equal across processes and batch sizes), falling back to
the model on a miss. The resulting index is identical to one embedded from scratch; it saves
the ~5 minutes the model would need for 20,000 documents, and the measured re-run uses the
plain model, with no cache (the changed passages are new text for both systems anyway).
"""

from __future__ import annotations

# Importing this module needs the bench extra (langchain-core, langchain-milvus, langchain-classic,
# sqlalchemy): the runner imports it only when they are installed.
import logging
import time
import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import psycopg
from langchain_core.embeddings import Embeddings

from embedding.cache import PostgresEmbeddingCache, text_key
from embedding.embedder import Embedder
from indexer.schema import DOCUMENTS_INDEX_TYPE, METRIC
from regionsync.settings import Settings
from streams.chunking import chunk_text

log = logging.getLogger(__name__)

COLLECTION = "langchain_peer"
BATCH_SIZE = 1000


class ModelEmbeddings(Embeddings):
    """LangChain ``Embeddings`` over our embedder. With ``cache`` (seeding only), vectors found
    in our pipeline's embedding cache are served from it and the model computes the rest."""

    def __init__(self, model: Embedder, cache: PostgresEmbeddingCache | None = None) -> None:
        self.model = model
        self.cache = cache
        self.computed = 0
        self.cached = 0
        self.seconds = 0.0  # time spent in the model

    def embed_documents(self, texts: list[str]) -> list[list[float]]:
        if not texts:
            return []
        found: dict[str, Any] = {}
        if self.cache is not None:
            found = self.cache.get_many(self.model.name, [text_key(t) for t in texts])
        missing = [t for t in dict.fromkeys(texts) if text_key(t) not in found]
        if missing:
            started = time.perf_counter()
            vectors = self.model.embed(missing)
            self.seconds += time.perf_counter() - started
            for text, vec in zip(missing, vectors, strict=True):
                found[text_key(text)] = vec
            self.computed += len(missing)
        self.cached += len(texts) - len(missing)
        return [found[text_key(t)].tolist() for t in texts]

    def embed_query(self, text: str) -> list[float]:
        return [float(x) for x in self.model.embed([text])[0]]


@dataclass
class Run:
    load_seconds: float  # read every row from Postgres and split it
    index_seconds: float  # index()
    passages: int
    result: dict[str, int]
    computed: int  # vectors the model computed
    cached: int  # vectors served from the cache (seeding only)
    embed_seconds: float  # of index_seconds, spent in the model

    @property
    def seconds(self) -> float:
        return self.load_seconds + self.index_seconds

    def to_dict(self) -> dict[str, Any]:
        return {
            "seconds": round(self.seconds, 3),
            "load_and_split_seconds": round(self.load_seconds, 3),
            "index_seconds": round(self.index_seconds, 3),
            "passages": self.passages,
            "result": self.result,
            "embedded": self.computed,
            "embed_seconds": round(self.embed_seconds, 3),
            "served_from_cache": self.cached,
        }


class Peer:
    def __init__(self, settings: Settings, model: Embedder, region: str | None = None) -> None:
        from langchain_classic.indexes import SQLRecordManager
        from langchain_milvus import Milvus

        self.settings = settings
        self.model = model
        region = region or settings.regions[0]
        path = Path(settings.state_dir) / "peer"
        path.mkdir(parents=True, exist_ok=True)
        self.record_manager = SQLRecordManager(
            namespace=f"milvus/{COLLECTION}", db_url=f"sqlite:///{path / 'record_manager.sqlite'}"
        )
        self.record_manager.create_schema()
        self._embeddings = ModelEmbeddings(model)
        self.store = Milvus(
            embedding_function=self._embeddings,
            collection_name=COLLECTION,
            connection_args={"uri": settings.milvus_uri(region), "token": settings.milvus_token.get_secret_value()},
            consistency_level="Strong",
            index_params={"index_type": DOCUMENTS_INDEX_TYPE, "metric_type": METRIC, "params": {}},
            auto_id=False,
            drop_old=True,
        )

    def source_documents(self) -> list[Any]:
        """Every published row, split into one LangChain Document per chunk."""
        from langchain_core.documents import Document

        out = []
        with psycopg.connect(self.settings.pg_dsn()) as conn:
            rows = conn.execute(
                "SELECT id, title, body FROM documents WHERE status = ANY(%s) ORDER BY id",
                (list(self.settings.published_values),),
            ).fetchall()
        for doc_id, title, body in rows:
            for i, text in enumerate(chunk_text(body, self.settings.chunk_size, self.settings.chunk_overlap)):
                out.append(Document(page_content=text, metadata={"source": doc_id, "title": title, "chunk": i}))
        return out

    def reindex(self, cache: PostgresEmbeddingCache | None = None) -> Run:
        """Re-run the user's pipeline from the source of truth (see the module docstring)."""
        from langchain_core.indexing import index

        self._embeddings.cache = cache
        self._embeddings.computed = self._embeddings.cached = 0
        self._embeddings.seconds = 0.0
        started = time.perf_counter()
        docs = self.source_documents()
        loaded = time.perf_counter()
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            result = index(
                docs, self.record_manager, self.store, cleanup="incremental", source_id_key="source",
                batch_size=BATCH_SIZE, key_encoder="sha256",
            )
        done = time.perf_counter()
        self._embeddings.cache = None
        counts: dict[str, Any] = dict(result)
        return Run(loaded - started, done - loaded, len(docs), {k: int(v) for k, v in counts.items()},
                   self._embeddings.computed, self._embeddings.cached, self._embeddings.seconds)

    def count(self) -> int:
        res = self.store.client.query(COLLECTION, filter="", output_fields=["count(*)"])
        return int(res[0]["count(*)"])

    def texts(self, doc_ids: Sequence[str]) -> dict[str, list[str]]:
        """The peer's chunk texts of ``doc_ids``, in chunk order."""
        quoted = ", ".join('"' + d.replace("\\", "\\\\").replace('"', '\\"') + '"' for d in doc_ids)
        rows = self.store.client.query(COLLECTION, filter=f"source in [{quoted}]", output_fields=["source", "chunk", "text"])
        out: dict[str, list[tuple[int, str]]] = {}
        for row in rows:
            out.setdefault(str(row["source"]), []).append((int(row["chunk"]), str(row["text"])))
        return {k: [t for _, t in sorted(v)] for k, v in out.items()}

    def close(self) -> None:
        try:
            self.store.client.drop_collection(COLLECTION)
        except Exception:  # noqa: BLE001 - the stack is about to stop anyway
            pass
