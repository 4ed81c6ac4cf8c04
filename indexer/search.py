"""Search one region: embed the query with the configured model, ask that region's Milvus.

The one place the indexer needs an embedder: a query is text, the index holds vectors.
"""

from __future__ import annotations

import sys
from dataclasses import asdict
from typing import Any

import orjson

from embedding.embedder import Embedder
from embedding.runtime import embedder_from_settings
from indexer.milvus_reader import MilvusIndexReader
from indexer.ports import Hit
from regionsync.settings import Settings


def search_region(
    settings: Settings, region: str, text: str, k: int = 5, embedder: Embedder | None = None
) -> list[Hit]:
    """Top-``k`` chunks of ``region`` for ``text``. Raises RegionUnavailable if its Milvus is down,
    EmbeddingError if the model cannot be loaded."""
    model = embedder or embedder_from_settings(settings)
    vector = model.embed([text])[0]
    index = MilvusIndexReader.for_region(settings, region)
    try:
        return index.search(vector, k)
    finally:
        index.close()


def hit_to_json(hit: Hit) -> dict[str, Any]:
    out = asdict(hit)
    out["tags"] = list(hit.tags)
    return out


def print_hits(hits: list[Hit], where: str, text: str, as_json: bool = False) -> None:
    """What `regionsync search` prints: JSON, or one line per hit under a heading."""
    if as_json:
        sys.stdout.write(orjson.dumps([hit_to_json(h) for h in hits], option=orjson.OPT_INDENT_2).decode() + "\n")
    elif not hits:
        print(f"no hits in {where}")
    else:
        print(f"{where}: {len(hits)} hits for {text!r}")
        for rank, hit in enumerate(hits, 1):
            print(format_hit(rank, hit))


def format_hit(rank: int, hit: Hit, width: int = 160) -> str:
    src = hit.source
    where = f"{src.get('topic')}[{src.get('partition')}]@{src.get('offset')}"
    if src.get("lsn") is not None:
        where += f" lsn={src.get('lsn')}"
    snippet = " ".join(hit.text.split())
    if len(snippet) > width:
        snippet = snippet[: width - 3] + "..."
    return (
        f"{rank}. {hit.title or '(untitled)'}  [doc {hit.doc_id} chunk {hit.chunk_index}]  "
        f"score={hit.score:.4f} version={hit.version}\n"
        f"   source: {where} ({src.get('kind')}, op={src.get('op')})\n"
        f"   {snippet}"
    )
