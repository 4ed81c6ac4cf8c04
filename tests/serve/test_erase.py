"""``regionsync dialog erase`` and ``POST /admin/sessions/{id}/erase`` on the running services: the
erased conversation is gone from both regions' views, a turn on it is refused (410), and another
session is untouched."""

from __future__ import annotations

import secrets

import orjson
import pytest
import requests

from regionsync.settings import Settings
from tests.e2e.test_cli import cli

from .conftest import OPERATOR_TOKEN, api, operator_api, wait_for

pytestmark = pytest.mark.integration

SECRET = f"my passport number is P{secrets.randbelow(10**8):08d}"


def active_url(urls: dict[str, str]) -> str:
    """The region taking turns now (other tests of the package promote regions)."""
    for url in urls.values():
        body = requests.get(f"{url}/readyz", timeout=30).json()
        if body.get("role") == "active":
            return url
    raise AssertionError("no region says it is active")


def view(url: str, session: str) -> requests.Response:
    return api.get(f"{url}/sessions/{session}", timeout=30)


def test_an_erased_conversation_is_gone_from_every_region(settings: Settings, urls: dict[str, str]) -> None:
    active = active_url(urls)
    gone, kept = f"erase-{secrets.token_hex(4)}", f"keep-{secrets.token_hex(4)}"
    last_seq = {}
    for session in (gone, kept):
        resp = api.post(f"{active}/sessions/{session}/turns", json={"text": SECRET, "customer_id": "c-1"}, timeout=60)
        assert resp.status_code == 200, resp.text
        last_seq[session] = resp.json()["last_seq"]

    def everywhere(session: str, status: str) -> bool:
        views = [view(url, session) for url in urls.values()]
        return all(r.status_code == 200 and r.json()["last_seq"] >= last_seq[session]
                   and r.json()["status"] == status for r in views)

    wait_for(lambda: everywhere(gone, "handoff") and everywhere(kept, "handoff"), 120, "the sessions in every region")
    assert all(SECRET in view(url, gone).text for url in urls.values())

    out = cli(settings, "dialog", "erase", gone, "--reason", "ticket 7", "--json")
    assert out.returncode == 0, out.stderr
    erased = orjson.loads(out.stdout)
    assert erased["session_id"] == gone and erased["known"] is True
    assert OPERATOR_TOKEN not in out.stdout + out.stderr

    wait_for(lambda: everywhere(gone, "erased"), 120, "the erasure in every region")
    for url in urls.values():
        state = view(url, gone).json()
        assert state["turns"] == [] and state["slots"] == {} and SECRET not in view(url, gone).text
        assert SECRET in view(url, kept).text  # another customer's conversation is untouched

    refused = api.post(f"{active}/sessions/{gone}/turns", json={"text": "hello again"}, timeout=60)
    assert refused.status_code == 410 and "erased" in refused.json()["detail"]
    again = operator_api.post(f"{active}/admin/sessions/{gone}/erase", timeout=60)
    assert again.status_code == 200 and again.json()["seq"] == erased["seq"]  # nothing published twice
