"""When two embeddings are "the same vector": the tolerance every comparison of vectors uses (the
embedder's self-check, the export check, the drills' and tests' comparisons with what a region
stores)."""

from __future__ import annotations

from typing import Any

import numpy as np

# The model's float results differ in the last bits between CPUs (AMD vs Intel kernels) and between
# batch shapes, so a stored vector is "the model's embedding" when it points the same way and has
# the same values up to rounding, never when its bytes are equal.
COSINE_MIN = 0.99999
ATOL = 1e-5


def vectors_close(a: Any, b: Any, cosine_min: float = COSINE_MIN, atol: float = ATOL) -> bool:
    """True when every row of ``a`` matches the same row of ``b`` within the tolerance
    (cosine >= ``cosine_min`` and element-wise ``allclose(atol=atol)``). 1-d or 2-d inputs."""
    x = np.atleast_2d(np.asarray(a, dtype=np.float64))
    y = np.atleast_2d(np.asarray(b, dtype=np.float64))
    if x.shape != y.shape:
        return False
    if not np.allclose(x, y, rtol=0.0, atol=atol):
        return False
    norms = np.linalg.norm(x, axis=1) * np.linalg.norm(y, axis=1)
    zero = norms == 0.0
    # Two zero vectors are equal (allclose said so); cosine is undefined for them.
    cos = np.einsum("ij,ij->i", x, y)[~zero] / norms[~zero]
    return bool(np.all(cos >= cosine_min))
