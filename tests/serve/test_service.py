"""Each region's HTTP service on the real embedded stack: every endpoint in both regions, bad
input, the standby's refusal and the promotion."""

from __future__ import annotations

import secrets

import psycopg
import pytest
import requests

from regionsync.settings import Settings
from serve.roles import writer_name

from .conftest import api, operator_api, wait_for

pytestmark = pytest.mark.integration


def sid(prefix: str) -> str:
    return f"{prefix}-{secrets.token_hex(4)}"


def test_health_and_readiness_state_the_role(settings: Settings, urls: dict[str, str]) -> None:
    for region, url in urls.items():
        health = api.get(f"{url}/healthz", timeout=10)
        assert health.status_code == 200 and health.json() == {"status": "ok", "region": region}

        def ready(url: str = url) -> bool:
            return api.get(f"{url}/readyz", timeout=30).status_code == 200

        wait_for(ready, 60, f"{region} ready")
        body = api.get(f"{url}/readyz", timeout=30).json()
        assert body["ready"] is True and body["region"] == region
        assert body["role"] == ("active" if region == "east" else "standby")
        assert set(body["checks"]) == {"milvus", "index_lag", "dialog", "role"}
        assert body["checks"]["role"]["active_region"] == "east"
        assert body["checks"]["index_lag"]["records"] <= settings.ready_max_index_lag


def test_search_in_both_regions_returns_hits_with_their_source(urls: dict[str, str]) -> None:
    for region, url in urls.items():
        resp = api.get(f"{url}/search", params={"q": "how many days do I have to return an item", "k": 3},
                            timeout=30)
        assert resp.status_code == 200, resp.text
        data = resp.json()
        assert data["region"] == region
        top = data["hits"][0]
        assert top["doc_id"] == "kb-returns" and top["title"] == "Returning an order" and top["chunk"] == 0
        assert 0.0 < top["score"] <= 1.0 + 1e-6 and top["version"] > 0
        src = top["source"]
        assert src["topic"] == "cms.public.documents" and src["partition"] >= 0 and src["offset"] >= 0
        assert src["lsn"] is not None and src["lsn"] > 0


def test_ask_answers_extractively_citing_sources_in_both_regions(urls: dict[str, str]) -> None:
    for region, url in urls.items():
        resp = api.post(f"{url}/ask", json={"question": "How long does standard shipping take?"}, timeout=30)
        assert resp.status_code == 200, resp.text
        data = resp.json()
        assert data["region"] == region and data["composer"] == "extractive"
        assert data["sources"][0]["doc_id"] == "kb-shipping" and data["sources"][0]["n"] == 1
        assert "three to five working days" in data["answer"] and "[1]" in data["answer"]
        assert data["sources"][0]["label"].startswith("kb-shipping#0@cms.public.documents[")


def test_conversation_in_the_active_region(urls: dict[str, str]) -> None:
    session = sid("conv")
    ask = api.post(f"{urls['east']}/ask", json={"question": "Can I return an item?", "session_id": session},
                        timeout=30)
    assert ask.status_code == 200, ask.text
    assert ask.json()["sources"][0]["doc_id"] == "kb-returns" and ask.json()["last_seq"] > 0

    order = api.post(f"{urls['east']}/sessions/{session}/turns", json={
        "text": "where is my order A-1001?", "intent": "inquire_order", "slots": {"order_id": "A-1001"}}, timeout=30)
    assert order.status_code == 200, order.text
    assert order.json()["reply"] == "Order A-1001 is shipped, expected on 2026-12-02."
    assert order.json()["sources"] == ["orders/A-1001"]

    knowledge = api.post(f"{urls['east']}/sessions/{session}/turns", json={
        "text": "and how fast is express shipping?", "intent": "knowledge"}, timeout=30)
    assert knowledge.status_code == 200 and knowledge.json()["citations"][0]["doc_id"] == "kb-shipping"

    state = api.get(f"{urls['east']}/sessions/{session}", timeout=10).json()
    texts = [(t["role"], t["text"]) for t in state["turns"]]
    assert texts[0] == ("user", "Can I return an item?") and texts[2] == ("user", "where is my order A-1001?")
    assert state["turns"][1]["sources"][0].startswith("kb-returns#0@")
    assert state["tool_calls"][0]["name"] == "order_lookup" and state["tool_calls"][0]["result"]["status"] == "shipped"
    assert state["origin"] == "east" and state["last_seq"] == knowledge.json()["last_seq"]

    # The standby's store follows the log: the same session is readable there.
    def mirrored() -> bool:
        r = api.get(f"{urls['north']}/sessions/{session}", timeout=10)
        return r.status_code == 200 and r.json()["last_seq"] == state["last_seq"]

    wait_for(mirrored, 60, "session mirrored in north")


def test_standby_refuses_turns_naming_the_active_region_and_writes_nothing(urls: dict[str, str]) -> None:
    session = sid("refused")
    resp = api.post(f"{urls['north']}/sessions/{session}/turns", json={"text": "hello"}, timeout=30)
    assert resp.status_code == 409
    assert resp.json()["active_region"] == "east" and "east" in resp.json()["detail"]
    ask = api.post(f"{urls['north']}/ask", json={"question": "hello?", "session_id": session}, timeout=30)
    assert ask.status_code == 409 and ask.json()["active_region"] == "east"
    for url in urls.values():
        assert api.get(f"{url}/sessions/{session}", timeout=10).status_code == 404


@pytest.mark.parametrize(
    ("method", "path", "kwargs", "status", "words"),
    [
        ("GET", "/search", {"params": {"q": ""}}, 422, "q"),
        ("GET", "/search", {"params": {"q": "   "}}, 422, "empty"),
        ("GET", "/search", {"params": {"q": "x" * 5000}}, 422, "2000"),
        ("GET", "/search", {"params": {"q": "ok", "k": 0}}, 422, "k"),
        ("GET", "/search", {}, 422, "q"),
        ("POST", "/ask", {"data": "{not json", "headers": {"Content-Type": "application/json"}}, 422, "JSON"),
        ("POST", "/ask", {"json": {"question": ""}}, 422, "question"),
        ("POST", "/ask", {"json": {"question": "hi", "extra": 1}}, 422, "extra"),
        ("POST", "/ask", {"json": ["question"]}, 422, "dict"),
        ("POST", "/sessions/bad%20id/turns", {"json": {"text": "hi"}}, 422, "session_id"),
        ("POST", "/sessions/s-1/turns", {"json": {"text": "hi", "slots": {"order_id": 10**30}}}, 422, "slots"),
        ("POST", "/sessions/s-1/turns", {"json": {"text": "a\u0000b"}}, 422, "control"),
        ("GET", "/sessions/never-seen-session", {}, 404, "never-seen-session"),
    ],
)
def test_bad_input_gets_a_clear_4xx(
    urls: dict[str, str], method: str, path: str, kwargs: dict, status: int, words: str
) -> None:
    for url in urls.values():
        resp = api.request(method, f"{url}{path}", timeout=30, **kwargs)
        assert resp.status_code == status, resp.text
        assert words.lower() in resp.text.lower()


def test_bad_turns_and_asks_write_nothing(urls: dict[str, str]) -> None:
    session = sid("bad")
    east = urls["east"]
    bad = [
        ("POST", f"/sessions/{session}/turns", {"json": {"text": ""}}),
        ("POST", f"/sessions/{session}/turns", {"json": {"text": "hi", "slots": {"order_id": 10**30}}}),
        ("POST", f"/sessions/{session}/turns", {"json": {"text": "hi", "intent": "Bad Intent"}}),
        ("POST", f"/sessions/{session}/turns", {"data": b"\xff\xfe", "headers": {"Content-Type": "application/json"}}),
        ("POST", "/ask", {"json": {"question": "x" * 5000, "session_id": session}}),
        ("POST", "/ask", {"json": {"question": "hi", "session_id": session, "k": 10**6}}),
    ]
    for method, path, kwargs in bad:
        resp = api.request(method, f"{east}{path}", timeout=30, **kwargs)
        assert resp.status_code == 422, (path, kwargs, resp.text)
    for url in urls.values():
        assert api.get(f"{url}/sessions/{session}", timeout=10).status_code == 404


def roles_of(urls: dict[str, str]) -> dict[str, str]:
    return {r: api.get(f"{u}/readyz", timeout=30).json()["role"] for r, u in urls.items()}


def wait_roles(urls: dict[str, str], active: str, timeout: float = 60.0) -> None:
    """Each region decides from its own database: a promotion reaches the others by replication."""
    want = {r: ("active" if r == active else "standby") for r in urls}
    wait_for(lambda: roles_of(urls) == want, timeout, f"every region to hold {active} active")


def promote(settings: Settings, url: str, force: bool = False) -> requests.Response:
    return operator_api.post(f"{url}/admin/promote", params={"force": "true"} if force else None, timeout=180)


def test_two_promotions_at_once_agree_on_one_writer(settings: Settings, urls: dict[str, str]) -> None:
    """Both regions promote themselves at once (no shared database to serialise them): each takes
    the next epoch; the higher ballot (epoch, then name) wins in every region once the promotions
    crossed, and only the winner takes turns."""
    from concurrent.futures import ThreadPoolExecutor

    try:
        with ThreadPoolExecutor(2) as pool:
            answers = dict(zip(urls, pool.map(lambda r: promote(settings, urls[r], force=True), urls), strict=True))
        assert all(a.status_code == 200 for a in answers.values()), {r: a.text for r, a in answers.items()}
        ballots = {r: (a.json()["epoch"], r) for r, a in answers.items() if a.json()["changed"]}
        winner = max(ballots.values())[1] if ballots else "east"
        wait_roles(urls, winner)
        session = sid("race")
        for region, url in urls.items():
            resp = api.post(f"{url}/sessions/{session}/turns", json={"text": "hello"}, timeout=60)
            if region == winner:
                assert resp.status_code == 200, resp.text
            else:
                assert resp.status_code == 409 and resp.json()["active_region"] == winner
    finally:
        assert promote(settings, urls["east"], force=True).status_code == 200
        wait_roles(urls, "east")


def test_promotion_moves_the_single_writer(settings: Settings, urls: dict[str, str]) -> None:
    session = sid("failover")
    first = api.post(f"{urls['east']}/sessions/{session}/turns",
                          json={"text": "where is my order?", "intent": "inquire_order"}, timeout=30)
    assert first.status_code == 200 and "order number" in first.json()["reply"]
    try:
        promoted = promote(settings, urls["north"])
        assert promoted.status_code == 200, promoted.text
        body = promoted.json()
        assert body["active"] == "north" and body["previous"] == "east" and body["changed"] is True
        assert body["published"] is True and "east" in body["cut"]
        # The old region refuses as soon as the promotion reached it, naming the new one.
        wait_roles(urls, "north")
        refused = api.post(f"{urls['east']}/sessions/{session}/turns", json={"text": "A-1002"}, timeout=30)
        assert refused.status_code == 409 and refused.json()["active_region"] == "north"
        # The new region continues the session where east left it (its state was caught up first).
        cont = api.post(f"{urls['north']}/sessions/{session}/turns",
                             json={"text": "it is A-1002", "slots": {"order_id": "A-1002"}}, timeout=30)
        assert cont.status_code == 200, cont.text
        assert cont.json()["reply"].startswith("Order A-1002 is being packed")
        assert cont.json()["last_seq"] > first.json()["last_seq"]
        state = api.get(f"{urls['north']}/sessions/{session}", timeout=10).json()
        assert [t["text"] for t in state["turns"]][:2] == ["where is my order?", first.json()["reply"]]
        # Promoting the active region again changes nothing.
        again = promote(settings, urls["north"])
        assert again.status_code == 200 and again.json()["changed"] is False
    finally:
        back = promote(settings, urls["east"])
        assert back.status_code == 200, back.text
        wait_roles(urls, "east")
    assert api.post(f"{urls['east']}/sessions/{session}/turns", json={"text": "thanks"}, timeout=30).status_code == 200


def test_recording_a_promotion_fences_a_hung_writer_of_the_old_region(settings: Settings, urls: dict[str, str]) -> None:
    """East hangs in the middle of a turn, holding its active-region row (its process frozen, say):
    north's promotion does not need east at all, and east's worker, recording it, does not wait for
    the hung turn for ever: it ends that session and takes the row."""
    from regionsync.pgdb import region_dsn

    hung = psycopg.connect(region_dsn(settings, "east"), application_name=writer_name("east"))
    try:
        hung.execute("SELECT region FROM regionsync_active_region FOR SHARE")  # a transaction left open
        promoted = promote(settings, urls["north"])
        assert promoted.status_code == 200, promoted.text
        assert promoted.json()["active"] == "north"
        wait_roles(urls, "north")
        with pytest.raises(psycopg.OperationalError):
            hung.execute("SELECT 1")  # fenced
        refused = api.post(f"{urls['east']}/sessions/{sid('fence')}/turns", json={"text": "hello"}, timeout=30)
        assert refused.status_code == 409 and refused.json()["active_region"] == "north"
    finally:
        hung.close()
        back = promote(settings, urls["east"])
        assert back.status_code == 200, back.text
        wait_roles(urls, "east")
