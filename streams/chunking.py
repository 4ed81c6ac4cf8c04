"""Split a document's text into chunks for embedding. Pure and deterministic: the same text always
gives the same chunks, so unchanged text maps to cached vectors and the same chunk ids."""

from __future__ import annotations

import re

_PARAGRAPH = re.compile(r"\n\s*\n")
_SENTENCE_END = re.compile(r"(?<=[.!?])\s+")


def chunk_text(text: str, size: int = 800, overlap: int = 100) -> list[str]:
    """Pack paragraphs into chunks of at most ``size`` characters.

    A paragraph longer than ``size`` is cut at sentence ends, then at whitespace. Each chunk after
    the first starts with up to ``overlap`` characters of the previous one (cut at a word
    boundary), so a sentence spanning a cut is still found. Empty text gives no chunks.
    """
    if size <= 0:
        raise ValueError("chunk size must be positive")
    overlap = max(0, min(overlap, size // 2))
    pieces: list[str] = []
    for para in _PARAGRAPH.split(text):
        para = para.strip()
        if not para:
            continue
        if len(para) <= size:
            pieces.append(para)
        else:
            pieces.extend(_split_long(para, size - overlap))
    chunks: list[str] = []
    current = ""
    for piece in pieces:
        candidate = f"{current}\n\n{piece}" if current else piece
        if len(candidate) <= size:
            current = candidate
            continue
        if current:
            chunks.append(current)
        tail = _tail(current, overlap) if current else ""
        current = f"{tail} {piece}".strip() if tail and len(tail) + 1 + len(piece) <= size else piece
    if current:
        chunks.append(current)
    return chunks


def _split_long(para: str, limit: int) -> list[str]:
    limit = max(1, limit)
    out: list[str] = []
    current = ""
    for sentence in _SENTENCE_END.split(para):
        for word_block in _hard_wrap(sentence, limit):
            candidate = f"{current} {word_block}" if current else word_block
            if len(candidate) <= limit:
                current = candidate
            else:
                if current:
                    out.append(current)
                current = word_block
    if current:
        out.append(current)
    return out


def _hard_wrap(sentence: str, limit: int) -> list[str]:
    if len(sentence) <= limit:
        return [sentence]
    out: list[str] = []
    current = ""
    for word in sentence.split():
        while len(word) > limit:  # a "word" longer than a chunk (URLs, base64): cut it
            if current:
                out.append(current)
                current = ""
            out.append(word[:limit])
            word = word[limit:]
        candidate = f"{current} {word}" if current else word
        if len(candidate) <= limit:
            current = candidate
        else:
            out.append(current)
            current = word
    if current:
        out.append(current)
    return out


def _tail(text: str, overlap: int) -> str:
    if overlap <= 0 or not text:
        return ""
    tail = text[-overlap:]
    cut = tail.find(" ")
    return tail[cut + 1 :] if 0 <= cut < len(tail) - 1 else tail
