"""Answers with sources: an extractive answer (default) or one written by an OpenAI-compatible
chat endpoint from the same retrieved passages.

The extractive composer is a pure function of the question and the hits: the best passages, one
per document, each trimmed to its sentences that share the most words with the question and
cited by number. Nothing is said that is not in a cited passage.
"""

from __future__ import annotations

import logging
import re
import threading
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import requests

from indexer.ports import Hit
from regionsync.settings import Settings

log = logging.getLogger(__name__)

NOTHING_FOUND = "I found nothing about that in this region's knowledge base."
_WORD = re.compile(r"[a-z0-9_]+")
_SENTENCE = re.compile(r"(?<=[.!?])\s+")


@dataclass(frozen=True)
class Composed:
    text: str
    cited: tuple[Hit, ...]  # in citation order: [1] is cited[0]
    composer: str  # "extractive" | "llm" | "extractive (llm failed)"


def source_label(hit: Hit) -> str:
    """A citation a reader can follow back to the change event: doc, chunk, topic/partition/offset, LSN."""
    src = hit.source or {}
    label = f"{hit.doc_id}#{hit.chunk_index}@{src.get('topic')}[{src.get('partition')}]:{src.get('offset')}"
    return label + (f" lsn={src['lsn']}" if src.get("lsn") is not None else "")


def best_passages(hits: list[Hit], limit: int = 3) -> tuple[Hit, ...]:
    """The highest-scoring chunk of each document, best first, at most ``limit``."""
    seen: set[str] = set()
    out: list[Hit] = []
    for hit in sorted(hits, key=lambda h: -h.score):
        if hit.doc_id not in seen:
            seen.add(hit.doc_id)
            out.append(hit)
        if len(out) == limit:
            break
    return tuple(out)


def extract(question: str, text: str, max_chars: int = 320) -> str:
    """The sentences of ``text`` that share most words with ``question``, in their order."""
    words = set(_WORD.findall(question.lower()))
    sentences = [s.strip() for s in _SENTENCE.split(" ".join(text.split())) if s.strip()]
    if not sentences:
        return ""
    ranked = sorted(range(len(sentences)), key=lambda i: (-len(words & set(_WORD.findall(sentences[i].lower()))), i))
    chosen: list[int] = []
    size = 0
    for i in ranked:
        if chosen and size + len(sentences[i]) > max_chars:
            continue
        chosen.append(i)
        size += len(sentences[i]) + 1
        if size >= max_chars:
            break
    out = " ".join(sentences[i] for i in sorted(chosen))
    return out if len(out) <= max_chars else out[: max_chars - 3].rstrip() + "..."


def extractive(question: str, hits: list[Hit]) -> Composed:
    cited = best_passages(hits)
    if not cited:
        return Composed(NOTHING_FOUND, (), "extractive")
    lines = [f"[{n}] {extract(question, hit.text)} ({hit.title or hit.doc_id})" for n, hit in enumerate(cited, 1)]
    return Composed("From the knowledge base:\n" + "\n".join(lines), cited, "extractive")


OK = "ok"
# Why a chat endpoint call failed: the label values of the failure counter (bounded on purpose).
TIMEOUT, UNREACHABLE, HTTP_ERROR, BAD_RESPONSE = "timeout", "unreachable", "http_error", "bad_response"
OUTCOMES = (OK, TIMEOUT, UNREACHABLE, HTTP_ERROR, BAD_RESPONSE)


class ChatComposer:
    """Writes the answer with an OpenAI-compatible ``/chat/completions`` endpoint, from the same
    passages the extractive answer would cite.

    When the endpoint fails (no answer within ``answer_llm_timeout_s``, refused connection, an
    HTTP error, a body that is not a chat completion) the customer gets the extractive answer
    from the same passages, with the same citations, and ``composer`` says
    ``"extractive (llm failed)"``. Why not a 502/504: the extractive answer is grounded in the
    same sources and correct, only terser, so failing the customer would trade a good answer for
    none; the operator sees the failure in the response, in one warning line (the reason, never
    the key) and in ``regionsync_answer_llm_requests_total{outcome}``, which the
    ``RegionAnswerLlmFailing`` alert watches.

    The API key travels in the ``Authorization`` header only; every message about a failure is
    scrubbed of it (an upstream error body may echo the key it refused).
    """

    def __init__(self, settings: Settings) -> None:
        self.url = settings.answer_llm_url.rstrip("/") + "/chat/completions"
        self._model = settings.answer_llm_model
        self._key = settings.answer_llm_api_key.get_secret_value()
        self._timeout = settings.answer_llm_timeout_s
        self._http = requests.Session()
        self._lock = threading.Lock()
        self._outcomes: Counter[str] = Counter()

    def outcomes(self) -> dict[str, int]:
        """Calls per outcome since the process started (``ok`` or a failure reason)."""
        with self._lock:
            return {o: self._outcomes[o] for o in OUTCOMES}

    def request_body(self, question: str, cited: tuple[Hit, ...]) -> dict[str, Any]:
        passages = "\n\n".join(f"[{n}] {h.title}: {h.text}" for n, h in enumerate(cited, 1))
        return {
            "model": self._model,
            "temperature": 0,
            "messages": [
                {"role": "system", "content": "Answer only from the numbered passages; cite them as [n]. "
                 "If they do not answer the question, say so."},
                {"role": "user", "content": f"Passages:\n{passages}\n\nQuestion: {question}"},
            ],
        }

    def compose(self, question: str, hits: list[Hit]) -> Composed:
        cited = best_passages(hits)
        if not cited:
            return Composed(NOTHING_FOUND, (), "llm")
        headers = {"Authorization": f"Bearer {self._key}"} if self._key else {}
        try:
            text = self._call(self.request_body(question, cited), headers)
        except _Failed as failed:
            self._count(failed.outcome)
            log.warning("answer endpoint %s failed (%s: %s); answering extractively",
                        self.url, failed.outcome, self._scrub(failed.detail))
            fallback = extractive(question, hits)
            return Composed(fallback.text, fallback.cited, "extractive (llm failed)")
        self._count(OK)
        return Composed(text, cited, "llm")

    def _call(self, body: dict[str, Any], headers: dict[str, str]) -> str:
        try:
            resp = self._http.post(self.url, json=body, headers=headers, timeout=self._timeout)
        except requests.Timeout as exc:  # before ConnectionError: a connect timeout is both
            raise _Failed(TIMEOUT, f"no answer within {self._timeout:g}s") from exc
        except requests.RequestException as exc:
            raise _Failed(UNREACHABLE, f"{type(exc).__name__}: {exc}") from exc
        if resp.status_code >= 400:
            raise _Failed(HTTP_ERROR, f"HTTP {resp.status_code}: {resp.text[:300]}")
        try:
            text = str(resp.json()["choices"][0]["message"]["content"]).strip()
        except (KeyError, IndexError, TypeError, ValueError) as exc:
            raise _Failed(BAD_RESPONSE, f"not a chat completion ({type(exc).__name__}): {resp.text[:200]}") from exc
        if not text:
            raise _Failed(BAD_RESPONSE, "empty answer")
        return text

    def _count(self, outcome: str) -> None:
        with self._lock:
            self._outcomes[outcome] += 1

    def _scrub(self, message: str) -> str:
        return message.replace(self._key, "***") if self._key else message


class _Failed(Exception):
    def __init__(self, outcome: str, detail: str) -> None:
        super().__init__(detail)
        self.outcome = outcome
        self.detail = detail


Composer = Callable[[str, list[Hit]], Composed]


def make_composer(settings: Settings) -> tuple[Composer, ChatComposer | None]:
    """``compose(question, hits) -> Composed`` (the chat endpoint if configured, else extractive),
    and the chat composer itself when there is one (its outcome counts feed /metrics)."""
    if settings.answer_llm_url:
        chat = ChatComposer(settings)
        return chat.compose, chat
    return extractive, None
