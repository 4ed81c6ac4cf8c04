"""One contract for every embedding cache, run against the in-memory and the Postgres one."""

from __future__ import annotations

import uuid
from collections.abc import Iterator, Sequence

import numpy as np
import pytest

from embedding.cache import (
    CachedEmbedder,
    EmbeddingCache,
    MemoryEmbeddingCache,
    PostgresEmbeddingCache,
    text_key,
)
from embedding.errors import CacheUnavailable
from embedding.hash_embedder import HashEmbedder
from regionsync.settings import Settings
from stack import procs


def vec(seed: int, dim: int = 384) -> np.ndarray:
    v = np.random.default_rng(seed).standard_normal(dim).astype(np.float32)
    return v / np.linalg.norm(v)


class CountingEmbedder(HashEmbedder):
    def __init__(self) -> None:
        super().__init__(384, name="counting")
        self.seen: list[list[str]] = []

    def embed(self, texts: Sequence[str]) -> np.ndarray:
        self.seen.append(list(texts))
        return super().embed(texts)


class CacheContract:
    """Subclasses provide a ``cache`` fixture; every test here must hold for every cache."""

    @pytest.fixture
    def model(self) -> str:
        return f"model-{uuid.uuid4().hex[:8]}"  # isolates tests sharing one Postgres table

    def test_miss_returns_nothing(self, cache: EmbeddingCache, model: str) -> None:
        assert cache.get_many(model, [text_key("never stored")]) == {}
        assert cache.get_many(model, []) == {}

    def test_put_then_get_is_bitwise_exact(self, cache: EmbeddingCache, model: str) -> None:
        vectors = {text_key(f"text {i}"): vec(i) for i in range(50)}
        cache.put_many(model, vectors)
        got = cache.get_many(model, list(vectors) + [text_key("absent")])
        assert set(got) == set(vectors)
        for key, v in vectors.items():
            assert got[key].dtype == np.float32 and got[key].tobytes() == v.tobytes()

    def test_models_do_not_mix(self, cache: EmbeddingCache, model: str) -> None:
        key = text_key("same text")
        cache.put_many(model, {key: vec(1)})
        cache.put_many(model + "-other", {key: vec(2)})
        assert cache.get_many(model, [key])[key].tobytes() == vec(1).tobytes()
        assert cache.get_many(model + "-other", [key])[key].tobytes() == vec(2).tobytes()

    def test_first_write_wins(self, cache: EmbeddingCache, model: str) -> None:
        key = text_key("x")
        cache.put_many(model, {key: vec(1)})
        cache.put_many(model, {key: vec(2), text_key("y"): vec(3)})
        got = cache.get_many(model, [key, text_key("y")])
        assert got[key].tobytes() == vec(1).tobytes() and got[text_key("y")].tobytes() == vec(3).tobytes()

    def test_duplicate_keys_in_a_get(self, cache: EmbeddingCache, model: str) -> None:
        key = text_key("dup")
        cache.put_many(model, {key: vec(5)})
        assert list(cache.get_many(model, [key, key, key])) == [key]

    def test_returned_vectors_are_copies(self, cache: EmbeddingCache, model: str) -> None:
        key = text_key("mutable?")
        cache.put_many(model, {key: vec(7)})
        got = cache.get_many(model, [key])[key]
        got[:] = 0
        assert cache.get_many(model, [key])[key].tobytes() == vec(7).tobytes()

    def test_cached_embedder_runs_the_model_only_on_misses(self, cache: EmbeddingCache) -> None:
        inner = CountingEmbedder()
        inner._name = f"counting-{uuid.uuid4().hex[:8]}"
        ce = CachedEmbedder(inner, cache)
        texts = ["a", "b", "a", "c", "b"]
        vectors, computed = ce.embed_texts(texts)
        assert inner.seen == [["a", "b", "c"]]  # duplicates within the batch embedded once
        assert computed == [True, True, False, True, False] and sum(computed) == 3
        for text, row in zip(texts, vectors, strict=True):
            assert row.tobytes() == inner.vector(text).tobytes()

        vectors2, computed2 = ce.embed_texts(["c", "d", "a"])
        assert inner.seen[-1] == ["d"] and computed2 == [False, True, False]
        assert vectors2[0].tobytes() == vectors[3].tobytes()

        # A second process (fresh CachedEmbedder, same store) finds everything.
        other = CachedEmbedder(inner, cache)
        _, computed3 = other.embed_texts(["a", "b", "c", "d"])
        assert sum(computed3) == 0 and len(inner.seen) == 2
        assert ce.embed_texts([])[0].shape == (0, 384)


class TestMemoryCache(CacheContract):
    @pytest.fixture
    def cache(self) -> MemoryEmbeddingCache:
        return MemoryEmbeddingCache()


@pytest.mark.integration  # a real Postgres
class TestPostgresCache(CacheContract):
    @pytest.fixture
    def cache(self, pg_settings: Settings) -> Iterator[PostgresEmbeddingCache]:
        cache = PostgresEmbeddingCache.from_settings(pg_settings)
        yield cache
        cache.close()

    def test_unreachable_store_raises_cache_unavailable(self) -> None:
        cache = PostgresEmbeddingCache(f"postgresql://u:p@127.0.0.1:{procs.free_port()}/db", connect_timeout=2)
        with pytest.raises(CacheUnavailable):
            cache.get_many("m", [text_key("x")])

    def test_survives_a_dropped_connection(self, cache: PostgresEmbeddingCache, pg_settings: Settings) -> None:
        import psycopg

        cache.put_many("m-drop", {text_key("k"): vec(1)})
        with psycopg.connect(pg_settings.pg_dsn(pg_settings.pg_state_database), autocommit=True) as admin:
            admin.execute(
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                "WHERE datname = current_database() AND pid <> pg_backend_pid()"
            )
        with pytest.raises(CacheUnavailable):
            cache.get_many("m-drop", [text_key("k")])
        assert cache.get_many("m-drop", [text_key("k")])[text_key("k")].tobytes() == vec(1).tobytes()
