"""Row 1: the embedding limit, i.e. passages/s of the model alone, the pipeline's ceiling.

The same embedder (``settings.embedder``), batch size and thread count as the change agent
(``embedding.runtime.embedder_from_settings``), fed the way the agent feeds it: one call per
agent batch, with the deduplicated chunk texts of up to ``batch_max_events`` documents. The
texts are a stride sample of the chunks of the very documents the throughput row loads, so both
rows embed passages of the same length distribution. The bench measures it twice, before and
after the throughput row, and compares the throughput with the mean: a machine whose load
changes during the run moves both sides of the ratio.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass

from embedding.embedder import Embedder
from embedding.runtime import embedder_from_settings
from regionsync.settings import Settings
from streams.chunking import chunk_text


@dataclass(frozen=True)
class EmbedLimit:
    passages: int
    seconds: float

    @property
    def passages_per_s(self) -> float:
        return self.passages / self.seconds if self.seconds > 0 else 0.0


def sample_blocks(settings: Settings, bodies: Sequence[str], max_passages: int) -> list[list[str]]:
    """Blocks of unique chunk texts, one per agent-sized batch of documents, ~``max_passages`` in
    all, drawn with a stride over ``bodies`` so the sample spans the whole corpus."""
    per_doc = [chunk_text(b, settings.chunk_size, settings.chunk_overlap) for b in bodies]
    total = sum(len(c) for c in per_doc)
    stride = max(1, total // max(1, max_passages))
    picked = per_doc[::stride]
    blocks: list[list[str]] = []
    taken = 0
    for start in range(0, len(picked), settings.batch_max_events):
        texts = list(dict.fromkeys(t for chunks in picked[start : start + settings.batch_max_events] for t in chunks))
        if taken + len(texts) > max_passages:
            texts = texts[: max_passages - taken]
        if texts:
            blocks.append(texts)
            taken += len(texts)
        if taken >= max_passages:
            break
    return blocks


def load_model(settings: Settings) -> Embedder:
    model = embedder_from_settings(settings)
    model.embed(["warm up the model before timing it"])
    return model


def measure(model: Embedder, blocks: Sequence[Sequence[str]]) -> EmbedLimit:
    started = time.perf_counter()
    for block in blocks:
        model.embed(block)
    return EmbedLimit(sum(len(b) for b in blocks), time.perf_counter() - started)
