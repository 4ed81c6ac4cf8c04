"""Root exception of the embedding package (embedders, model files, embedding cache)."""

from __future__ import annotations


class EmbeddingError(Exception):
    """Base of every error raised by embedding/."""


class EmbedderError(EmbeddingError):
    """The embedding model could not be loaded or run."""


class CacheUnavailable(EmbeddingError):
    """The embedding cache's store does not answer; the caller retries the batch."""
