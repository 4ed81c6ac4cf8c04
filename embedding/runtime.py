"""Wiring of the embedding parts from Settings, for the processes that use them."""

from __future__ import annotations

from embedding.cache import CachedEmbedder, PostgresEmbeddingCache
from embedding.embedder import Embedder
from regionsync.settings import Settings


def embedder_from_settings(settings: Settings) -> Embedder:
    """The model as configured: ``settings.embedder`` picks ONNX Runtime (default, no torch) or
    sentence-transformers (the reference); model, batch size and threads as set."""
    if settings.embedder == "torch":
        # Imported only here: the ONNX path must not load torch (it costs ~1 GB of RSS).
        from embedding.torch_embedder import SentenceTransformerEmbedder

        return SentenceTransformerEmbedder.from_settings(settings)
    from embedding.onnx_embedder import OnnxEmbedder

    return OnnxEmbedder.from_settings(settings)


def cached_embedder(settings: Settings) -> CachedEmbedder:
    """The configured model behind the shared Postgres embedding cache (what the change agent uses)."""
    return CachedEmbedder(embedder_from_settings(settings), PostgresEmbeddingCache.from_settings(settings))
