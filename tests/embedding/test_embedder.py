"""The reference model (sentence-transformers on torch, offline), the tolerance, and the fake."""

from __future__ import annotations

import os

import numpy as np

from embedding.embedder import Embedder
from embedding.hash_embedder import HashEmbedder
from embedding.torch_embedder import SentenceTransformerEmbedder
from embedding.vectors import vectors_close

TEXTS = [
    "Regional indexers keep every Milvus in step with the CMS.",
    "short",
    "A much longer passage about change data capture, Debezium envelopes, TOAST placeholders and "
    "why every sink must be idempotent because delivery is at least once.",
    "Ünïcödé and emoji 🚀 survive tokenisation.",
    "",
]


def test_real_model_loads_offline_and_embeds(torch_embedder: SentenceTransformerEmbedder) -> None:
    assert os.environ.get("HF_HUB_OFFLINE") == "1"
    assert isinstance(torch_embedder, Embedder)
    assert torch_embedder.dim == 384 and torch_embedder.name == "all-MiniLM-L6-v2"
    out = torch_embedder.embed(TEXTS)
    assert out.shape == (len(TEXTS), 384) and out.dtype == np.float32
    assert np.allclose(np.linalg.norm(out, axis=1), 1.0, atol=1e-5)
    assert torch_embedder.embed([]).shape == (0, 384)
    # Semantics, roughly: related sentences are closer than unrelated ones.
    a, b, c = torch_embedder.embed(["The cat sat on the mat.", "A kitten rests on a rug.", "Quarterly tax filing deadlines."])
    assert float(a @ b) > float(a @ c) + 0.2


def test_vectors_agree_across_batch_sizes_within_tolerance(torch_embedder: SentenceTransformerEmbedder) -> None:
    # Float results differ in the last bits between CPUs and batch shapes (shared/STACK.md), so
    # "the same vector" means within the tolerance, on any machine.
    rng = np.random.default_rng(7)
    words = " ".join(TEXTS).split()
    texts = TEXTS + [" ".join(rng.choice(words, int(n))) for n in rng.integers(1, 260, 30)]
    alone = np.stack([torch_embedder.embed([t])[0] for t in texts])
    original = torch_embedder.batch_size
    try:
        for batch_size in (2, 7, 32):
            torch_embedder.batch_size = batch_size
            order = rng.permutation(len(texts))
            shuffled = torch_embedder.embed([texts[i] for i in order])
            back = np.empty_like(shuffled)
            back[order] = shuffled
            assert vectors_close(back, alone), f"batch size {batch_size}"
    finally:
        torch_embedder.batch_size = original
    # Same vectors as sentence-transformers' own encode.
    reference = torch_embedder._model.encode(texts, convert_to_numpy=True)
    assert vectors_close(reference, alone)


def test_vectors_close_accepts_rounding_and_rejects_real_differences() -> None:
    rng = np.random.default_rng(3)
    a = rng.normal(size=(4, 384)).astype(np.float32)
    a /= np.linalg.norm(a, axis=1, keepdims=True)
    last_bits = np.nextafter(a, np.float32(2.0))  # one ulp up, everywhere
    assert vectors_close(a, last_bits) and vectors_close(a[0], last_bits[0])
    moved = a.copy()
    moved[2, 5] += 1e-3
    assert not vectors_close(a, moved)
    assert not vectors_close(a, -a)
    assert not vectors_close(a, a[:3])
    assert vectors_close(np.zeros(3), np.zeros(3))


def test_hash_embedder_is_deterministic_and_normalised() -> None:
    e1, e2 = HashEmbedder(16), HashEmbedder(16)
    a = e1.embed(["x", "y", "x"])
    assert a.tobytes() == e2.embed(["x", "y", "x"]).tobytes()
    assert a[0].tobytes() == a[2].tobytes() and a[0].tobytes() != a[1].tobytes()
    assert np.allclose(np.linalg.norm(a, axis=1), 1.0, atol=1e-6)
    assert isinstance(e1, Embedder) and e1.dim == 16 and e1.embed([]).shape == (0, 16)
