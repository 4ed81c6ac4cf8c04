"""The OpenAI-compatible composer against a real HTTP server speaking the chat-completions
protocol (tests/serve/chat_server.py): what goes out, what comes back, and what a failure gives
(the extractive answer from the same passages, the reason counted, the key never shown)."""

from __future__ import annotations

import logging
import secrets
from collections.abc import Iterator

import pytest
from pydantic import SecretStr

from regionsync.settings import Settings
from serve.answers import NOTHING_FOUND, ChatComposer, extractive, make_composer

from .chat_server import ANSWER, ChatServer, chat_server
from .test_answers import RETURNS, SHIPPING, hit

QUESTION = "How long does standard shipping take?"
HITS = [hit("kb-shipping", 0, 0.8, SHIPPING, "Shipping times"), hit("kb-returns", 0, 0.6, RETURNS, "Returns"),
        hit("kb-shipping", 1, 0.5, "A second chunk of the shipping page.")]


@pytest.fixture()
def server() -> Iterator[ChatServer]:
    with chat_server() as s:
        yield s


@pytest.fixture()
def key() -> str:
    return f"sk-test-{secrets.token_hex(12)}"


def composer(server: ChatServer, key: str = "", timeout_s: float = 5.0) -> ChatComposer:
    settings = Settings(answer_llm_url=server.url + "/", answer_llm_model="gpt-test",
                        answer_llm_api_key=SecretStr(key), answer_llm_timeout_s=timeout_s)
    compose, chat = make_composer(settings)
    assert chat is not None and compose == chat.compose
    return chat


def test_without_an_endpoint_the_answer_is_extractive() -> None:
    compose, chat = make_composer(Settings(answer_llm_url=""))
    assert chat is None and compose is extractive


def test_the_question_and_the_cited_passages_go_out_and_the_answer_keeps_their_sources(
    server: ChatServer, key: str
) -> None:
    chat = composer(server, key)
    composed = chat.compose(QUESTION, HITS)

    assert composed.text == ANSWER and composed.composer == "llm"
    # The same sources the extractive answer would cite, in the same order.
    assert composed.cited == extractive(QUESTION, HITS).cited
    assert [h.doc_id for h in composed.cited] == ["kb-shipping", "kb-returns"]

    sent = server.last
    assert sent.path == "/v1/chat/completions"
    assert sent.headers["Authorization"] == f"Bearer {key}"
    assert sent.headers["Content-Type"] == "application/json"
    assert sent.body["model"] == "gpt-test" and sent.body["temperature"] == 0
    system, user = sent.body["messages"]
    assert system["role"] == "system" and "cite them as [n]" in system["content"]
    assert user["role"] == "user" and user["content"].endswith(f"Question: {QUESTION}")
    assert f"[1] Shipping times: {SHIPPING}" in user["content"]
    assert f"[2] Returns: {RETURNS}" in user["content"]
    assert "second chunk" not in user["content"]  # one passage per document, as cited
    assert chat.outcomes()["ok"] == 1


def test_no_key_configured_sends_no_authorization_header(server: ChatServer) -> None:
    composer(server).compose(QUESTION, HITS)
    assert "Authorization" not in server.last.headers


def test_nothing_retrieved_asks_nobody(server: ChatServer, key: str) -> None:
    composed = composer(server, key).compose(QUESTION, [])
    assert composed.text == NOTHING_FOUND and composed.cited == () and server.requests == []


@pytest.mark.parametrize(("mode", "outcome", "said"), [
    ("unauthorized", "http_error", "HTTP 401"),
    ("slow", "timeout", "no answer within 0.5s"),
    ("garbage", "bad_response", "not a chat completion"),
    ("empty", "bad_response", "empty answer"),
])
def test_a_failed_call_answers_extractively_from_the_same_passages_and_says_why(
    server: ChatServer, key: str, caplog: pytest.LogCaptureFixture, mode: str, outcome: str, said: str
) -> None:
    server.mode, server.delay_s = mode, 3.0
    chat = composer(server, key, timeout_s=0.5)
    with caplog.at_level(logging.DEBUG):
        composed = chat.compose(QUESTION, HITS)
    expected = extractive(QUESTION, HITS)
    assert composed.composer == "extractive (llm failed)"
    assert composed.text == expected.text and composed.cited == expected.cited
    assert chat.outcomes()[outcome] == 1 and chat.outcomes()["ok"] == 0
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1 and said in warnings[0] and f"({outcome}: " in warnings[0]
    # The refused key is echoed by the upstream's error body: scrubbed from every log line.
    assert all(key not in r.getMessage() for r in caplog.records)
    if mode == "unauthorized":
        assert "Incorrect API key provided: ***" in warnings[0]


def test_an_unreachable_endpoint_answers_extractively(key: str, caplog: pytest.LogCaptureFixture) -> None:
    from stack.procs import free_port

    settings = Settings(answer_llm_url=f"http://127.0.0.1:{free_port()}/v1", answer_llm_api_key=SecretStr(key))
    chat = ChatComposer(settings)
    with caplog.at_level(logging.WARNING):
        composed = chat.compose(QUESTION, HITS)
    assert composed.composer == "extractive (llm failed)" and composed.cited == extractive(QUESTION, HITS).cited
    assert chat.outcomes()["unreachable"] == 1
    assert all(key not in r.getMessage() for r in caplog.records)
