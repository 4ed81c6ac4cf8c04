"""Embedding cache: (model, sha256 of text) -> float32 vector, so unchanged chunk text is never
embedded twice. The model is the pipeline's bottleneck (~100 passages/s on 2 cores); a cache hit
costs a row lookup.

Vectors are stored as raw little-endian float32 bytes: a hit returns bitwise the vector the model
produced, so a document re-chunked from the cache indexes exactly what a fresh embedding would.
"""

from __future__ import annotations

import hashlib
import logging
import threading
from collections.abc import Mapping, Sequence
from typing import Any, Protocol

import numpy as np

from embedding.embedder import Embedder
from embedding.errors import CacheUnavailable

log = logging.getLogger(__name__)


def text_key(text: str) -> str:
    """Cache key of a text: hex sha256 of its UTF-8 bytes (same as streams.events.text_hash)."""
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def _to_bytes(vec: np.ndarray) -> bytes:
    return np.asarray(vec, dtype="<f4").tobytes()


def _from_bytes(raw: bytes) -> np.ndarray:
    return np.frombuffer(raw, dtype="<f4").astype(np.float32)


class EmbeddingCache(Protocol):
    """A store of vectors by (model, text key). Both calls raise ``CacheUnavailable`` when the
    store does not answer; nothing is half-written that a retry would not complete."""

    def get_many(self, model: str, keys: Sequence[str]) -> dict[str, np.ndarray]:
        """Vectors found for ``keys`` (missing keys are simply absent)."""
        ...

    def put_many(self, model: str, vectors: Mapping[str, np.ndarray]) -> None:
        """Store vectors; a key already present keeps its first vector (insert-if-absent)."""
        ...


class MemoryEmbeddingCache:
    """In-process cache (tests, one-off tools). Not shared between processes."""

    def __init__(self) -> None:
        self._data: dict[tuple[str, str], bytes] = {}
        self._lock = threading.Lock()

    def get_many(self, model: str, keys: Sequence[str]) -> dict[str, np.ndarray]:
        with self._lock:
            return {k: _from_bytes(self._data[(model, k)]) for k in keys if (model, k) in self._data}

    def put_many(self, model: str, vectors: Mapping[str, np.ndarray]) -> None:
        with self._lock:
            for key, vec in vectors.items():
                self._data.setdefault((model, key), _to_bytes(vec))

    def __len__(self) -> int:
        return len(self._data)


class PostgresEmbeddingCache:
    """Cache table in Postgres, shared by every change-agent process (and surviving restarts).

    One connection, autocommit, guarded by a lock (the agent calls from a worker thread). A broken
    connection is dropped and reopened on the next call; the failing call raises
    ``CacheUnavailable`` so the caller retries its batch.
    """

    def __init__(self, dsn: str, table: str = "embedding_cache", connect_timeout: int = 5) -> None:
        if not table.replace("_", "").isalnum():
            raise ValueError(f"bad table name {table!r}")
        self._dsn = dsn
        self._table = table
        self._connect_timeout = connect_timeout
        self._conn: Any = None
        self._lock = threading.Lock()

    @classmethod
    def from_settings(cls, settings: Any) -> PostgresEmbeddingCache:
        return cls(settings.pg_dsn(settings.pg_state_database))

    def _connection(self) -> Any:
        import psycopg

        if self._conn is None or self._conn.closed:
            self._conn = psycopg.connect(self._dsn, autocommit=True, connect_timeout=self._connect_timeout)
            self._conn.execute(
                f"""CREATE TABLE IF NOT EXISTS {self._table} (
                    model      text   NOT NULL,
                    text_hash  text   NOT NULL,
                    dim        int    NOT NULL,
                    vector     bytea  NOT NULL,
                    created_at timestamptz NOT NULL DEFAULT now(),
                    PRIMARY KEY (model, text_hash)
                )"""
            )
        return self._conn

    def _run(self, fn: Any) -> Any:
        import psycopg

        with self._lock:
            try:
                return fn(self._connection())
            except psycopg.OperationalError as exc:
                self.close_quietly()
                raise CacheUnavailable(f"embedding cache: {exc}".strip()) from exc

    def get_many(self, model: str, keys: Sequence[str]) -> dict[str, np.ndarray]:
        if not keys:
            return {}
        wanted = list(dict.fromkeys(keys))

        def query(conn: Any) -> list[tuple[str, bytes]]:
            cur = conn.execute(
                f"SELECT text_hash, vector FROM {self._table} WHERE model = %s AND text_hash = ANY(%s)",
                (model, wanted),
            )
            return list(cur.fetchall())

        return {key: _from_bytes(bytes(raw)) for key, raw in self._run(query)}

    def put_many(self, model: str, vectors: Mapping[str, np.ndarray]) -> None:
        if not vectors:
            return
        keys = list(vectors)
        blobs = [_to_bytes(vectors[k]) for k in keys]
        dims = [len(b) // 4 for b in blobs]

        def insert(conn: Any) -> None:
            # One statement for the whole batch; concurrent writers of the same text race
            # harmlessly (same model + text = same vector), the first one wins.
            conn.execute(
                f"""INSERT INTO {self._table} (model, text_hash, dim, vector)
                    SELECT %s, k, d, v FROM unnest(%s::text[], %s::int[], %s::bytea[]) AS t(k, d, v)
                    ON CONFLICT (model, text_hash) DO NOTHING""",
                (model, keys, dims, blobs),
            )

        self._run(insert)

    def count(self, model: str | None = None) -> int:
        def query(conn: Any) -> int:
            if model is None:
                row = conn.execute(f"SELECT count(*) FROM {self._table}").fetchone()
            else:
                row = conn.execute(f"SELECT count(*) FROM {self._table} WHERE model = %s", (model,)).fetchone()
            return int(row[0])

        return int(self._run(query))

    def close_quietly(self) -> None:
        conn, self._conn = self._conn, None
        if conn is not None:
            try:
                conn.close()
            except Exception:  # noqa: BLE001 - already broken
                pass

    def close(self) -> None:
        with self._lock:
            self.close_quietly()


class CachedEmbedder:
    """An embedder that consults the cache first and runs the model only on misses.

    ``embed_texts`` is what the change agent calls once per batch: identical texts within the
    batch are embedded once, and freshly computed vectors are stored before returning (a crash
    after that loses nothing; a crash before it only costs a re-embedding).
    """

    def __init__(self, embedder: Embedder, cache: EmbeddingCache) -> None:
        self.embedder = embedder
        self.cache = cache
        self.hits = 0
        self.computed = 0

    @property
    def name(self) -> str:
        return self.embedder.name

    @property
    def dim(self) -> int:
        return self.embedder.dim

    def embed_texts(self, texts: Sequence[str]) -> tuple[np.ndarray, list[bool]]:
        """Vectors for ``texts`` (float32 [n, dim], row i for texts[i]) and, per text, whether
        its vector was computed by the model in this call (True) or came from the cache (False).
        A text repeated in the batch is computed once: only its first occurrence is flagged.
        ``sum(flags)`` is the number of model computations."""
        out = np.empty((len(texts), self.dim), dtype=np.float32)
        flags = [False] * len(texts)
        if not texts:
            return out, flags
        keys = [text_key(t) for t in texts]
        unique = list(dict.fromkeys(keys))
        found = self.cache.get_many(self.name, unique)
        misses = [k for k in unique if k not in found]
        if misses:
            first_text: dict[str, str] = {}
            for key, text in zip(keys, texts, strict=True):
                first_text.setdefault(key, text)
            fresh = self.embedder.embed([first_text[k] for k in misses])
            computed = dict(zip(misses, fresh, strict=True))
            self.cache.put_many(self.name, computed)
            found.update(computed)
            seen: set[str] = set()
            for i, key in enumerate(keys):
                if key in computed and key not in seen:
                    flags[i] = True
                    seen.add(key)
        for i, key in enumerate(keys):
            out[i] = found[key]
        self.computed += len(misses)
        self.hits += len(unique) - len(misses)
        return out, flags

    def embed(self, texts: Sequence[str]) -> np.ndarray:
        """The plain :class:`Embedder` call, served through the cache."""
        return self.embed_texts(texts)[0]
