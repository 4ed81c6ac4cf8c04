"""A region whose Milvus is down, on the real stack: /readyz says so (503, the failing check, the
role still stated) so a load balancer stops sending it traffic; a search gets a clear 503, never a
500, counted as a server error in /metrics; once Milvus is back the region serves again."""

from __future__ import annotations

import pytest

from regionsync.settings import Settings
from stack import milvus

from .conftest import api, wait_for
from .test_metrics import scrape, value

pytestmark = pytest.mark.integration


def test_a_region_without_its_milvus_is_not_ready_and_answers_503(settings: Settings, urls: dict[str, str]) -> None:
    url = urls["north"]
    wait_for(lambda: api.get(f"{url}/readyz", timeout=30).status_code == 200, 120, "north ready")
    errors_before = value(scrape(f"{url}/metrics"), "regionsync_http_errors_total", route="/search", region="north")
    milvus.stop(settings, "north")
    try:
        # Readiness is checked every second in the background: it says so within a few seconds.
        wait_for(lambda: api.get(f"{url}/readyz", timeout=30).status_code == 503, 30, "north not ready")
        ready = api.get(f"{url}/readyz", timeout=120)
        assert ready.status_code == 503
        body = ready.json()
        assert body["ready"] is False and body["role"] == "standby" and body["region"] == "north"
        assert body["checks"]["milvus"]["ok"] is False and "unavailable" in body["checks"]["milvus"]["error"]
        assert body["checks"]["role"]["ok"] is True  # what still works is reported as such

        search = api.get(f"{url}/search", params={"q": "return an item"}, timeout=120)
        assert search.status_code == 503, search.text
        assert "region north's index is unavailable" in search.json()["detail"]
        after = scrape(f"{url}/metrics")
        assert value(after, "regionsync_http_errors_total", route="/search", region="north") == errors_before + 1
        assert value(after, "regionsync_http_requests_total", route="/search", status="503", region="north") >= 1

        # The other region is untouched.
        assert api.get(f"{urls['east']}/readyz", timeout=60).status_code == 200
    finally:
        milvus.start(settings, "north")

    wait_for(lambda: api.get(f"{url}/readyz", timeout=30).status_code == 200, 180, "north ready again")
    hits = api.get(f"{url}/search", params={"q": "return an item within 30 days"}, timeout=60).json()["hits"]
    assert hits and hits[0]["doc_id"] == "kb-returns"
