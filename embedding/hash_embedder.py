"""A deterministic fake embedder for unit tests: no model, no semantics."""

from __future__ import annotations

import hashlib
from collections.abc import Sequence

import numpy as np

from embedding.embedder import FixedIdentity


class HashEmbedder(FixedIdentity):
    """Deterministic fake: a unit vector seeded by the text's sha256. Equal texts give equal
    vectors, different texts (almost surely) different ones; no semantics at all."""

    def __init__(self, dim: int = 384, name: str | None = None) -> None:
        self._dim = dim
        self._name = name or f"hash-{dim}"
        self.calls = 0
        self.texts_embedded = 0

    def vector(self, text: str) -> np.ndarray:
        seed = int.from_bytes(hashlib.sha256(text.encode("utf-8")).digest()[:8], "little")
        vec = np.random.default_rng(seed).standard_normal(self._dim).astype(np.float32)
        return (vec / np.linalg.norm(vec)).astype(np.float32)

    def embed(self, texts: Sequence[str]) -> np.ndarray:
        self.calls += 1
        self.texts_embedded += len(texts)
        out = np.empty((len(texts), self._dim), dtype=np.float32)
        for i, text in enumerate(texts):
            out[i] = self.vector(text)
        return out
