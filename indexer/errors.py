"""Root exception of the indexer package (region sinks, region workers, search)."""

from __future__ import annotations


class IndexerError(Exception):
    """Base of every error raised by indexer/."""


class RegionUnavailable(IndexerError):
    """A region's Milvus does not answer (down, restarting, unreachable, timed out).

    Transient by nature: the caller retries the same batch later. Nothing was lost, but a write
    may have been partly done; every sink write is idempotent, so a retry completes it.
    """

    def __init__(self, uri: str, detail: str) -> None:
        super().__init__(f"Milvus at {uri} unavailable: {detail}")
        self.uri = uri
        self.detail = detail


class SinkError(IndexerError):
    """Milvus answered with an error that is not an outage (schema mismatch, rejected row...)."""


class InvalidRecord(IndexerError):
    """A doc record that can never be applied (wrong vector size, missing version...).

    The worker checks records before applying them and dead-letters these, with ``reason``.
    """

    def __init__(self, reason: str, detail: str) -> None:
        super().__init__(f"{reason}: {detail}")
        self.reason = reason
        self.detail = detail
