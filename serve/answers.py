"""Answers with sources: an extractive answer (default) or one written by an OpenAI-compatible
chat endpoint from the same retrieved passages.

The extractive composer is a pure function of the question and the hits: the best passages, one
per document, each trimmed to its sentences that share the most words with the question and
cited by number. Nothing is said that is not in a cited passage.
"""

from __future__ import annotations

import logging
import re
from dataclasses import dataclass
from typing import Any

import requests

from indexer.sink import Hit
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


class ChatComposer:
    """Writes the answer with an OpenAI-compatible ``/chat/completions`` endpoint, from the same
    passages the extractive answer would cite; falls back to the extractive answer on any error."""

    def __init__(self, settings: Settings) -> None:
        self._url = settings.answer_llm_url.rstrip("/") + "/chat/completions"
        self._model = settings.answer_llm_model
        self._key = settings.answer_llm_api_key
        self._timeout = settings.answer_llm_timeout_s

    def compose(self, question: str, hits: list[Hit]) -> Composed:
        cited = best_passages(hits)
        if not cited:
            return Composed(NOTHING_FOUND, (), "llm")
        passages = "\n\n".join(f"[{n}] {h.title}: {h.text}" for n, h in enumerate(cited, 1))
        body: dict[str, Any] = {
            "model": self._model,
            "temperature": 0,
            "messages": [
                {"role": "system", "content": "Answer only from the numbered passages; cite them as [n]. "
                 "If they do not answer the question, say so."},
                {"role": "user", "content": f"Passages:\n{passages}\n\nQuestion: {question}"},
            ],
        }
        headers = {"Authorization": f"Bearer {self._key.get_secret_value()}"} if self._key.get_secret_value() else {}
        try:
            resp = requests.post(self._url, json=body, headers=headers, timeout=self._timeout)
            resp.raise_for_status()
            text = str(resp.json()["choices"][0]["message"]["content"]).strip()
        except (requests.RequestException, KeyError, IndexError, TypeError, ValueError) as exc:
            # The exception text can hold the URL, never the key (it travels in a header).
            log.warning("answer endpoint failed (%s); answering extractively", type(exc).__name__)
            fallback = extractive(question, hits)
            return Composed(fallback.text, fallback.cited, "extractive (llm failed)")
        return Composed(text, cited, "llm")


def make_composer(settings: Settings) -> Any:
    """``compose(question, hits) -> Composed``: the chat endpoint if configured, else extractive."""
    if settings.answer_llm_url:
        return ChatComposer(settings).compose
    return extractive
