"""Row 8: search latency per region, at the bench's full corpus.

Each region's Milvus answers the same queries: top-5 chunks among published ones (a status filter,
as the assistant's retrieval sends), one query at a time, from one client, while the pipeline is
idle. The query vectors are embedded beforehand, so the figures are the index's alone; the region
service's HTTP search (model + index + serialisation) is row 9 (:mod:`.http_search`), same queries.
The queries are the first sentences of documents of the corpus: questions the index can answer.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from functools import partial
from typing import Any, Protocol

import numpy as np

from bench.retry import Retries
from indexer.milvus_reader import MilvusIndexReader
from regionsync.settings import Settings

K = 5
WHERE = 'status == "published"'


class QueryEmbedder(Protocol):
    def embed(self, texts: Sequence[str]) -> np.ndarray: ...


def queries_from(bodies: Sequence[str], n: int) -> list[str]:
    """``n`` queries: the first sentence (at most 200 characters) of evenly spaced documents."""
    if not bodies or n <= 0:
        return []
    step = max(1, len(bodies) // n)
    out = []
    for body in bodies[::step][:n]:
        first = body.strip().split(". ", 1)[0]
        out.append(first[:200] or body[:200])
    return out


def measure(settings: Settings, model: QueryEmbedder, queries: Sequence[str], retries: Retries,
            warm_up: int = 5) -> dict[str, Any]:
    vectors = model.embed(list(queries))
    regions: dict[str, Any] = {}
    for region in settings.regions:
        sink = retries.call(f"milvus connect ({region})", partial(MilvusIndexReader.for_region, settings, region))
        try:
            for vec in vectors[:warm_up]:
                retries.call(f"search ({region})", partial(sink.search, vec, K, WHERE))
            times_ms: list[float] = []
            empty = 0
            for vec in vectors:
                started = time.perf_counter()
                hits = retries.call(f"search ({region})", partial(sink.search, vec, K, WHERE))
                times_ms.append((time.perf_counter() - started) * 1000)
                empty += not hits
            rows = sink.count()
        finally:
            sink.close()
        regions[region] = {
            "searches": len(times_ms), "rows": rows, "empty_results": empty,
            "p50_ms": round(float(np.percentile(times_ms, 50)), 2) if times_ms else None,
            "p99_ms": round(float(np.percentile(times_ms, 99)), 2) if times_ms else None,
        }
    return {"k": K, "filter": WHERE, "regions": regions}
