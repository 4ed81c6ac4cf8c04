"""Row 9 (search through each region's service) against two real HTTP servers that answer
``GET /search`` like a region service: what it sends, what it counts, how a failure ends the row.
The real services are measured by tests/bench/test_bench_quick.py."""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, urlparse

import pytest
import requests
from pydantic import SecretStr

from bench import http_search
from bench.retry import Retries
from regionsync.settings import Settings
from stack.procs import free_port_block

TOKEN = "assistant-bench-token-0123"


@contextmanager
def region_service(port: int, seen: list[dict[str, Any]], status: int = 200) -> Iterator[None]:
    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:  # noqa: N802 - http.server's naming
            url = urlparse(self.path)
            query = {k: v[0] for k, v in parse_qs(url.query).items()}
            seen.append({"port": port, "path": url.path, "auth": self.headers.get("Authorization"), **query})
            hits = [] if query.get("q") == "nothing matches" else [{"doc_id": "d", "chunk": 0}]
            body = json.dumps({"region": "r", "query": query.get("q"), "hits": hits}).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, format: str, *args: Any) -> None:  # noqa: A002
            pass

    server = ThreadingHTTPServer(("127.0.0.1", port), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield
    finally:
        server.shutdown()
        server.server_close()


def test_every_query_goes_to_each_regions_service_and_is_timed() -> None:
    base = free_port_block(2)
    settings = Settings(regions=["east", "north"], serve_base_port=base, api_tokens=SecretStr(f"assistant:{TOKEN}"))
    seen: list[dict[str, Any]] = []
    queries = ["how to parse JSON", "nothing matches", "open a file"]
    with ExitStack() as stack:
        for i in range(2):
            stack.enter_context(region_service(base + i, seen))
        figures = http_search.measure(settings, queries, Retries(sleep=lambda _: None), warm_up=2)

    assert figures["k"] == 5
    for i, region in enumerate(["east", "north"]):
        got = figures["regions"][region]
        assert got["url"] == f"http://127.0.0.1:{base + i}/search"
        assert got["searches"] == 3 and got["empty_results"] == 1
        assert 0 < got["p50_ms"] <= got["p99_ms"]
        mine = [s for s in seen if s["port"] == base + i]
        # Two warm-up queries, then every query once; top-5 each.
        assert [s["q"] for s in mine] == queries[:2] + queries
        assert all(s["path"] == "/search" and s["k"] == "5" and s["auth"] == f"Bearer {TOKEN}" for s in mine)


def test_a_service_that_answers_errors_fails_the_row_after_the_retries() -> None:
    base = free_port_block(1)
    settings = Settings(regions=["east"], serve_base_port=base, api_tokens=SecretStr(f"assistant:{TOKEN}"))
    retries = Retries(attempts=2, sleep=lambda _: None)
    with region_service(base, [], status=503), pytest.raises(requests.HTTPError, match="503"):
        http_search.measure(settings, ["q"], retries)
    assert retries.to_dict()["gave_up"] == {"http search (east)": 1}
