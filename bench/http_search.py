"""Row 9: search through HTTP, per region, at the bench's full corpus.

What a client of a region sees: ``GET /search?q=&k=5`` on the region's running service
(serve/), so the figure holds the query's embedding by the service's model (loaded once per
process), the Milvus search, the JSON response and loopback HTTP. Row 8 measures the index alone
with the same queries; the difference is the service's share. One query at a time over one
keep-alive connection (what a load balancer or an assistant holds), after a few warm-up queries,
while the pipeline is idle.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from functools import partial
from typing import Any

import numpy as np
import requests

from bench.retry import Retries
from bench.search import K
from regionsync.settings import Settings
from serve.auth import ASSISTANT
from serve.tls import http_session


def _search(http: requests.Session, url: str, query: str) -> list[dict[str, Any]]:
    params: dict[str, str | int] = {"q": query, "k": K}
    resp = http.get(url, params=params, timeout=60)
    resp.raise_for_status()  # a 4xx/5xx is an error of the row, not a fast empty answer
    hits: list[dict[str, Any]] = resp.json()["hits"]
    return hits


def measure(settings: Settings, queries: Sequence[str], retries: Retries, warm_up: int = 5) -> dict[str, Any]:
    regions: dict[str, Any] = {}
    for region in settings.regions:
        url = f"{settings.serve_url(region)}/search"
        with http_session(settings, ASSISTANT) as http:
            for query in queries[:warm_up]:
                retries.call(f"http search ({region})", partial(_search, http, url, query))
            times_ms: list[float] = []
            empty = 0
            for query in queries:
                started = time.perf_counter()
                hits = retries.call(f"http search ({region})", partial(_search, http, url, query))
                times_ms.append((time.perf_counter() - started) * 1000)
                empty += not hits
        regions[region] = {
            "url": url, "searches": len(times_ms), "empty_results": empty,
            "p50_ms": round(float(np.percentile(times_ms, 50)), 2) if times_ms else None,
            "p99_ms": round(float(np.percentile(times_ms, 99)), 2) if times_ms else None,
        }
    return {"k": K, "regions": regions}
