#!/usr/bin/env python3
"""Throughput of the ONNX embedder against the torch reference, in one process, on the same texts.

    .venv/bin/python scripts/compare_embedders.py [--passages 384] [--rounds 5] [--batch-size 32] [--threads 2]

Both embedders are built from the same Settings (batch size, threads) and fed the same passages:
a stride sample of the bench corpus's chunks, in agent-sized calls (embedding/bench's row 1 way).
The rounds alternate which embedder goes first, so a machine whose load changes during the run
moves both sides; each round's ratio is printed, and the median of the ratios is the result.
Needs the export extra (torch, sentence-transformers): scripts/setup.sh installs it.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.corpus import stdlib_documents  # noqa: E402
from bench.embed_limit import sample_blocks  # noqa: E402
from embedding.embedder import Embedder  # noqa: E402
from embedding.runtime import embedder_from_settings  # noqa: E402
from embedding.vectors import vectors_close  # noqa: E402
from regionsync.settings import Settings  # noqa: E402


def rate(model: Embedder, blocks: list[list[str]]) -> float:
    started = time.perf_counter()
    for block in blocks:
        model.embed(block)
    return sum(len(b) for b in blocks) / (time.perf_counter() - started)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--passages", type=int, default=384)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    base = Settings(embed_batch_size=args.batch_size, embed_threads=args.threads)
    bodies = [d.body for d in stdlib_documents(limit=2000)]
    blocks = sample_blocks(base, bodies, args.passages)
    texts = [t for b in blocks for t in b]
    models = {kind: embedder_from_settings(base.model_copy(update={"embedder": kind})) for kind in ("torch", "onnx")}
    same = vectors_close(models["onnx"].embed(texts), models["torch"].embed(texts))  # also the warm-up
    print(f"{len(texts)} passages in {len(blocks)} calls, mean {sum(map(len, texts)) / len(texts):.0f} chars; "
          f"batch size {args.batch_size}, {args.threads} threads; vectors within tolerance: {same}")
    rates: dict[str, list[float]] = {"torch": [], "onnx": []}
    for r in range(args.rounds):
        order = ("torch", "onnx") if r % 2 == 0 else ("onnx", "torch")
        for kind in order:
            rates[kind].append(rate(models[kind], blocks))
        print(f"round {r + 1}: torch {rates['torch'][-1]:6.1f}/s  onnx {rates['onnx'][-1]:6.1f}/s  "
              f"onnx/torch {rates['onnx'][-1] / rates['torch'][-1]:.2f}", flush=True)
    ratios = [o / t for o, t in zip(rates["onnx"], rates["torch"], strict=True)]
    print(f"median: torch {statistics.median(rates['torch']):.1f}/s, onnx {statistics.median(rates['onnx']):.1f}/s, "
          f"onnx/torch {statistics.median(ratios):.2f} (per round {min(ratios):.2f}-{max(ratios):.2f})")
    return 0 if same else 1


if __name__ == "__main__":
    sys.exit(main())
