"""The one place serve/ constructs an embedder and a region's Milvus client.

Every caller in serve/ goes through these two functions: the embedder is the one the settings
choose (``embedding.runtime``: ONNX by default), the same the change agent embeds passages with.
"""

from __future__ import annotations

from embedding.embedder import Embedder
from embedding.runtime import embedder_from_settings
from indexer.milvus_reader import MilvusIndexReader
from indexer.ports import IndexReader
from regionsync.settings import Settings


def make_embedder(settings: Settings) -> Embedder:
    """The query embedder: the same model the change agent embeds passages with, on
    ``serve_embed_threads`` threads (one query at a time, not batches)."""
    return embedder_from_settings(settings.model_copy(update={"embed_threads": settings.serve_embed_threads}))


def make_index_reader(settings: Settings, region: str) -> IndexReader:
    """A reader of ``region``'s Milvus (searches, ping)."""
    return MilvusIndexReader.for_region(settings, region)
