"""The one place serve/ constructs an embedder and a region's Milvus client.

The embedder and the Milvus layer are moving (an ``embedding/`` package, the C++ Lite server);
every caller in serve/ goes through these two functions, so such a move is a one-line change here.
"""

from __future__ import annotations

from indexer.embedder import Embedder, SentenceTransformerEmbedder
from indexer.sink import RegionSink
from regionsync.settings import Settings


def make_embedder(settings: Settings) -> Embedder:
    """The query embedder: the same model the change agent embeds passages with."""
    return SentenceTransformerEmbedder.from_settings(settings)


def make_region_sink(settings: Settings, region: str) -> RegionSink:
    """A client of ``region``'s Milvus (searches, ping)."""
    return RegionSink.for_region(settings, region)
