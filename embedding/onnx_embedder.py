"""The run-time embedder: all-MiniLM-L6-v2 on ONNX Runtime, no torch in the process.

The graph is the model's transformer exported once at setup (embedding/export.py); pooling and
normalisation, the two modules sentence-transformers runs after it, are done here in numpy exactly
as those modules do them (mean of the token embeddings under the attention mask, then L2). The
vectors are the reference's within the project's tolerance (tests/embedding/test_onnx_embedder.py),
and the change agent's process stays under 0.5 GB (torch's import alone took it to 1.3 GB).
Throughput against torch: scripts/compare_embedders.py.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from embedding.errors import EmbedderError
from embedding.model_files import ONNX_FILE, TOKENIZER_FILE, Manifest, model_dir, read_manifest

if TYPE_CHECKING:
    from regionsync.settings import Settings

log = logging.getLogger(__name__)

# Most tokens one model call carries (rows x padded length): a full batch of 32 up to 64 tokens,
# fewer rows for longer texts. A call's working set grows with rows x length (attention's with
# rows x length^2) and sets the change agent's peak RSS: measured on 96 texts of up to 256 tokens,
# +250 MB per call at 4096 tokens, +150 MB at 2048. It is faster too: on ~450-character passages,
# 2048 ran 1.2-1.3x the passages/s of 8192 (no cap for batch 32) in the same process, and 1024
# was no faster than 2048 -- the working set stays in cache, the products stay large enough.
MAX_BATCH_TOKENS = 2048


class OnnxEmbedder:
    """Embeds with the exported model in ``directory`` (see embedding/model_files.py).

    ``threads`` is ONNX Runtime's intra-op thread count (per session, unlike torch's process-wide
    setting). Batches are formed from texts sorted by token count, so each batch is padded only to
    the longest of similar-length texts; a batch has at most ``batch_size`` rows and
    ``max_batch_tokens`` padded tokens.
    """

    def __init__(
        self, directory: Path, batch_size: int = 32, threads: int = 2, max_batch_tokens: int = MAX_BATCH_TOKENS
    ) -> None:
        self.manifest: Manifest = read_manifest(directory)
        started = time.monotonic()
        try:
            import onnxruntime as ort
            from tokenizers import Tokenizer

            tokenizer = Tokenizer.from_file(str(directory / TOKENIZER_FILE))
            # tokenizer.json pads to 128 and truncates at 128; sentence-transformers truncates at
            # max_seq_length (256) and pads per batch. Padding is done here, per batch.
            tokenizer.no_padding()
            tokenizer.enable_truncation(max_length=self.manifest.max_seq_length)
            options = ort.SessionOptions()
            options.intra_op_num_threads = max(1, threads)
            options.inter_op_num_threads = 1
            options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
            options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
            options.log_severity_level = 3  # warnings about unused initialisers are noise here
            # Intra-op threads spin-wait for the next run by default. The change agent embeds sparse
            # changes one at a time, and each wait burnt a core that Postgres, the broker and the
            # regions' Milvus needed on this 2-core machine (measured, 800-character passages
            # 100 ms apart, 2 threads: 103 ms CPU per passage spinning, 63 ms not; full batches of
            # 32 kept their throughput). Off, the threads sleep between runs.
            options.add_session_config_entry("session.intra_op.allow_spinning", "0")
            # No arena and no per-shape memory plans: every batch has another shape, and both keep
            # the largest working set ever seen allocated (measured: peaks of 0.6-1.3 GB RSS).
            options.enable_cpu_mem_arena = False
            options.enable_mem_pattern = False
            session = ort.InferenceSession(
                str(directory / ONNX_FILE), sess_options=options, providers=["CPUExecutionProvider"]
            )
        except Exception as exc:  # noqa: BLE001 - any load failure is the same problem to the caller
            raise EmbedderError(f"could not load the ONNX model from {directory}: {exc}") from exc
        if self.manifest.pooling != "mean":
            raise EmbedderError(f"{directory}: pooling {self.manifest.pooling!r} is not supported (only mean)")
        self._tokenizer: Any = tokenizer
        self._session: Any = session
        self._inputs = {i.name for i in session.get_inputs()}
        self.load_seconds = time.monotonic() - started
        self.batch_size = max(1, batch_size)
        self.max_batch_tokens = max(self.manifest.max_seq_length, max_batch_tokens)
        self.directory = directory
        log.info(
            "loaded %s (ONNX, %d dims) from %s in %.2fs, %d threads",
            self.name, self.dim, directory, self.load_seconds, threads,
        )

    @classmethod
    def from_settings(cls, settings: Settings) -> OnnxEmbedder:
        directory = model_dir(settings.embed_model, settings.embed_onnx_dir)
        return cls(directory, settings.embed_batch_size, settings.embed_threads)

    @property
    def name(self) -> str:
        return self.manifest.model

    @property
    def dim(self) -> int:
        return self.manifest.dim

    def embed(self, texts: Sequence[str]) -> np.ndarray:
        """Embed ``texts``, sorted by token count into batches (see ``_batches``).

        A text's vector depends on its batch mates only in the last bits (measured: 33-41 of 43
        rows bitwise equal across batch sizes 2-32, all within the tolerance). The torch
        embedder's fixed buckets (pad to a multiple of 32 tokens, batch within a bucket) made
        rows bitwise equal here too, but cost 18% of the throughput (more padding, smaller
        batches; measured in one process), and nothing relies on bitwise equality: vectors are
        compared with a tolerance, and the cache hands out the first vector of a text.
        """
        out = np.empty((len(texts), self.dim), dtype=np.float32)
        if not texts:
            return out
        try:
            encodings = self._tokenizer.encode_batch(list(texts))
            for idx in self._batches([len(e.ids) for e in encodings]):
                out[idx] = self._embed_batch([encodings[i] for i in idx])
        except Exception as exc:  # noqa: BLE001
            raise EmbedderError(f"embedding {len(texts)} texts failed: {exc}") from exc
        return out

    def _batches(self, lengths: Sequence[int]) -> list[list[int]]:
        """Indexes of the texts, shortest first, cut into batches within both limits."""
        batches: list[list[int]] = []
        current: list[int] = []
        for i in sorted(range(len(lengths)), key=lambda i: lengths[i]):
            # Sorted ascending: text i is the longest so far, so it sets the padded length.
            if current and (len(current) >= self.batch_size or (len(current) + 1) * lengths[i] > self.max_batch_tokens):
                batches.append(current)
                current = []
            current.append(i)
        if current:
            batches.append(current)
        return batches

    def _embed_batch(self, encodings: Sequence[Any]) -> np.ndarray:
        length = max(len(e.ids) for e in encodings)
        ids = np.zeros((len(encodings), length), dtype=np.int64)
        mask = np.zeros_like(ids)
        types = np.zeros_like(ids)
        for row, enc in enumerate(encodings):
            n = len(enc.ids)
            ids[row, :n] = enc.ids
            mask[row, :n] = enc.attention_mask
            types[row, :n] = enc.type_ids
        feeds = {"input_ids": ids, "attention_mask": mask, "token_type_ids": types}
        tokens = self._session.run(None, {k: v for k, v in feeds.items() if k in self._inputs})[0]
        # sentence-transformers' Pooling (mean): sum of the unmasked token embeddings over their
        # count (clamped at 1e-9); then Normalize: x / max(||x||, 1e-12).
        weights = mask.astype(np.float32)
        summed = np.matmul(weights[:, None, :], tokens)[:, 0, :]
        pooled = summed / np.maximum(weights.sum(axis=1, keepdims=True), 1e-9)
        if self.manifest.normalize:
            pooled /= np.maximum(np.linalg.norm(pooled, axis=1, keepdims=True), 1e-12)
        return pooled.astype(np.float32, copy=False)
