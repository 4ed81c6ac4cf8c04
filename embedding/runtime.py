"""Wiring of the embedding parts from Settings, for the processes that use them."""

from __future__ import annotations

from embedding.cache import CachedEmbedder, PostgresEmbeddingCache
from embedding.embedder import Embedder
from embedding.torch_embedder import SentenceTransformerEmbedder
from regionsync.settings import Settings


def embedder_from_settings(settings: Settings) -> Embedder:
    """The real model as configured (model, batch size, threads)."""
    return SentenceTransformerEmbedder.from_settings(settings)


def cached_embedder(settings: Settings) -> CachedEmbedder:
    """The real model behind the shared Postgres embedding cache (what the change agent uses)."""
    return CachedEmbedder(embedder_from_settings(settings), PostgresEmbeddingCache.from_settings(settings))
