"""Wiring of the indexer's parts from Settings, for the processes that use them."""

from __future__ import annotations

from indexer.cache import CachedEmbedder, PostgresEmbeddingCache
from indexer.embedder import SentenceTransformerEmbedder
from regionsync.settings import Settings


def cached_embedder(settings: Settings) -> CachedEmbedder:
    """The real model behind the shared Postgres embedding cache (what the change agent uses)."""
    return CachedEmbedder(SentenceTransformerEmbedder.from_settings(settings), PostgresEmbeddingCache.from_settings(settings))
