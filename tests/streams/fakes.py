"""Fakes for unit tests of the change agent's pure logic."""

from __future__ import annotations

import hashlib
from collections.abc import Sequence

import numpy as np

from streams.deadletter import DeadLetter
from streams.events import DocRecord


class FakeEmbedder:
    """Deterministic vectors from a hash; remembers what it embedded, like a cache would."""

    def __init__(self, dim: int = 8) -> None:
        self.dim = dim
        self.seen: set[str] = set()
        self.calls: list[list[str]] = []

    def embed_texts(self, texts: Sequence[str]) -> tuple[np.ndarray, list[bool]]:
        self.calls.append(list(texts))
        rows = []
        fresh = []
        for text in texts:
            digest = hashlib.sha256(text.encode()).digest()
            rows.append(np.frombuffer(digest[: self.dim * 4], dtype="<f4").copy())
            fresh.append(text not in self.seen)
            self.seen.add(text)
        return np.stack(rows), fresh


class ListOutput:
    def __init__(self) -> None:
        self.records: list[DocRecord] = []
        self.dead: list[DeadLetter] = []
        self.pending: list[object] = []
        self.flushes = 0

    def send_record(self, record: DocRecord) -> None:
        self.pending.append(record)

    def send_dead_letter(self, letter: DeadLetter) -> None:
        self.pending.append(letter)

    def flush(self) -> None:
        for item in self.pending:
            (self.records if isinstance(item, DocRecord) else self.dead).append(item)  # type: ignore[arg-type]
        self.pending.clear()
        self.flushes += 1
