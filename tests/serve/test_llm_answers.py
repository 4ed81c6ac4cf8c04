"""POST /ask of a region service configured with an OpenAI-compatible chat endpoint (the stand-in
of tests/serve/chat_server.py), on the real stack: the answer is the endpoint's, the sources are
the region's; a failing endpoint gives the extractive answer with the same sources; the failure
is counted in /metrics and logged with its reason; the API key shows nowhere."""

from __future__ import annotations

import secrets
import sys
from collections.abc import Iterator

import pytest
import requests
from pydantic import SecretStr

from regionsync.settings import Settings
from stack import procs

from .chat_server import ANSWER, ChatServer, chat_server
from .conftest import api
from .test_metrics import scrape, value

pytestmark = pytest.mark.integration

NAME = "serve-east-llm"
QUESTION = "How long does standard shipping take?"


@pytest.fixture(scope="module")
def key() -> str:
    return f"sk-test-{secrets.token_hex(12)}"


@pytest.fixture(scope="module")
def chat() -> Iterator[ChatServer]:
    with chat_server() as server:
        yield server


@pytest.fixture(scope="module")
def llm_url(settings: Settings, chat: ChatServer, key: str) -> Iterator[str]:
    """A second service of region east, on a port of its own, whose answers the chat endpoint writes."""
    configured = settings.model_copy(update={
        "answer_llm_url": chat.url, "answer_llm_model": "gpt-test", "answer_llm_api_key": SecretStr(key),
        "answer_llm_timeout_s": 2.0,
    })
    port = procs.free_port()
    proc = procs.spawn(settings.state_dir, NAME, [sys.executable, "-m", "serve", "--region", "east", "--port", str(port)],
                       env=configured.child_env())
    url = f"http://{settings.serve_host}:{port}"
    try:
        procs.wait_until(lambda: requests.get(f"{url}/healthz", timeout=2).status_code == 200, 120, NAME, proc)
        yield url
    finally:
        procs.stop(settings.state_dir, NAME)


def ask(url: str, **body: object) -> dict:
    resp = api.post(f"{url}/ask", json={"question": QUESTION, **body}, timeout=120)
    assert resp.status_code == 200, resp.text
    data: dict = resp.json()
    return data


def test_the_chat_endpoint_writes_the_answer_from_the_regions_passages(
    urls: dict[str, str], llm_url: str, chat: ChatServer, key: str
) -> None:
    chat.mode = "ok"
    plain = ask(urls["east"])
    got = ask(llm_url)
    assert got["composer"] == "llm" and got["answer"] == ANSWER
    assert got["sources"] == plain["sources"] and got["sources"][0]["doc_id"] == "kb-shipping"

    sent = chat.last
    assert sent.headers["Authorization"] == f"Bearer {key}"
    prompt = sent.body["messages"][-1]["content"]
    assert prompt.endswith(f"Question: {QUESTION}")
    for src in plain["sources"]:
        assert f"[{src['n']}] {src['title']}: " in prompt
    assert "three to five working days" in prompt  # the passage's text, not only its title

    # With a session, the endpoint's answer and the region's sources are the session's turns.
    session = f"llm-{secrets.token_hex(4)}"
    turned = ask(llm_url, session_id=session)
    assert turned["answer"] == ANSWER and turned["sources"] == plain["sources"] and turned["last_seq"] > 0
    state = api.get(f"{llm_url}/sessions/{session}", timeout=30).json()
    assert [(t["role"], t["text"]) for t in state["turns"]] == [("user", QUESTION), ("bot", ANSWER)]
    assert state["turns"][1]["sources"] == [s["label"] for s in plain["sources"]]


@pytest.mark.parametrize(("mode", "outcome"), [("unauthorized", "http_error"), ("slow", "timeout"),
                                               ("garbage", "bad_response")])
def test_a_failing_endpoint_gives_the_extractive_answer_with_the_same_sources(
    settings: Settings, urls: dict[str, str], llm_url: str, chat: ChatServer, key: str, mode: str, outcome: str
) -> None:
    chat.mode, chat.delay_s = mode, 4.0  # "slow": past the service's 2 s timeout
    samples = scrape(f"{llm_url}/metrics")
    before = value(samples, "regionsync_answer_llm_requests_total", outcome=outcome)
    ok_before = value(samples, "regionsync_answer_llm_requests_total", outcome="ok")
    plain = ask(urls["east"])
    got = api.post(f"{llm_url}/ask", json={"question": QUESTION}, timeout=120)
    assert got.status_code == 200, got.text
    data = got.json()
    assert data["composer"] == "extractive (llm failed)"
    assert data["answer"] == plain["answer"] and data["sources"] == plain["sources"]
    after = scrape(f"{llm_url}/metrics")
    assert value(after, "regionsync_answer_llm_requests_total", outcome=outcome, region="east") == before + 1
    assert value(after, "regionsync_answer_llm_requests_total", outcome="ok") == ok_before  # not counted as ok

    log = (settings.state_dir / "logs" / f"{NAME}.log").read_text()
    assert f"answer endpoint {chat.url}/chat/completions failed ({outcome}: " in log
    assert key not in log and key not in got.text and key not in requests.get(f"{llm_url}/metrics", timeout=30).text
