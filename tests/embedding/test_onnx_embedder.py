"""The run-time embedder (ONNX Runtime) against the reference (sentence-transformers on torch)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from pydantic import ValidationError

from embedding.embedder import Embedder
from embedding.errors import EmbedderError
from embedding.export import export, sha256_file
from embedding.model_files import MANIFEST_FILE, ONNX_FILE, model_dir, read_manifest
from embedding.onnx_embedder import OnnxEmbedder
from embedding.runtime import embedder_from_settings
from embedding.torch_embedder import SentenceTransformerEmbedder, bundled_model_path
from embedding.vectors import vectors_close
from regionsync.settings import Settings

REPO = Path(__file__).resolve().parents[2]

WORDS = {
    "latin": "regional indexers keep every Milvus in step with the content management system while "
    "change data capture streams each committed row through Kafka".split(),
    "cyrillic": "региональные индексаторы держат каждый экземпляр в согласии с системой управления "
    "содержимым пока поток изменений идёт через брокер".split(),
    "cjk": list("每个区域的索引器让各自的向量数据库与内容管理系统保持同步变更数据捕获把每一行提交的数据送进消息队列"),
    "arabic": "تحافظ المفهرسات الإقليمية على تزامن كل قاعدة بيانات متجهة مع نظام إدارة المحتوى بينما "
    "تتدفق التغييرات عبر الوسيط".split(),
}


def texts_of_many_lengths() -> list[str]:
    rng = np.random.default_rng(11)
    texts = ["", "a", "Ünïcödé and emoji 🚀 survive tokenisation."]
    for script, words in WORDS.items():
        sep = "" if script == "cjk" else " "
        for n in (1, 5, 40, 110, 180, 260, 420):
            texts.append(sep.join(rng.choice(words, n)))
    mixed = [w for words in WORDS.values() for w in words]
    texts += [" ".join(rng.choice(mixed, int(n))) for n in rng.integers(1, 400, 12)]
    return texts


def token_counts(texts: list[str]) -> list[int]:
    from tokenizers import Tokenizer

    tok = Tokenizer.from_file(str(bundled_model_path() / "tokenizer.json"))
    tok.no_truncation()
    tok.no_padding()
    return [len(e.ids) for e in tok.encode_batch(texts)]


def test_onnx_vectors_are_sentence_transformers_within_tolerance(
    onnx_embedder: OnnxEmbedder, torch_embedder: SentenceTransformerEmbedder
) -> None:
    texts = texts_of_many_lengths()
    counts = token_counts(texts)
    # The sample really spans the lengths that matter: under 128, between the bundled
    # tokenizer.json's 128 and the model's 256, and past 256 (truncated) -- in every script.
    assert min(counts) <= 3 and any(128 < c <= 256 for c in counts) and sum(c > 256 for c in counts) >= 8
    # The model's own pipeline (Transformer -> mean Pooling -> Normalize), batched its own way.
    reference = torch_embedder._model.encode(texts, batch_size=16, convert_to_numpy=True)
    got = onnx_embedder.embed(texts)
    assert got.shape == (len(texts), 384) and got.dtype == np.float32
    assert vectors_close(got, reference)
    assert np.allclose(np.linalg.norm(got, axis=1), 1.0, atol=1e-5)


def test_truncation_is_at_256_tokens_not_the_tokenizer_files_128(onnx_embedder: OnnxEmbedder) -> None:
    words = "the quick brown fox jumps over the lazy dog".split()
    base = [words[i % len(words)] for i in range(300)]
    assert token_counts([" ".join(base)])[0] == 302  # one token per word, plus [CLS] and [SEP]
    changed_at_200 = base.copy()
    changed_at_200[200] = "zebra"
    changed_at_280 = base.copy()
    changed_at_280[280] = "zebra"
    a, b, c = onnx_embedder.embed([" ".join(base), " ".join(changed_at_200), " ".join(changed_at_280)])
    assert not vectors_close(a, b)  # token 201 is seen: not truncated at 128
    assert a.tobytes() == c.tobytes()  # token 281 is not: truncated at 256, same input ids


def test_vectors_do_not_depend_on_batch_mates(onnx_embedder: OnnxEmbedder) -> None:
    texts = texts_of_many_lengths()
    rng = np.random.default_rng(5)
    alone = np.stack([onnx_embedder.embed([t])[0] for t in texts])
    original = onnx_embedder.batch_size
    try:
        for batch_size in (2, 7, 32):
            onnx_embedder.batch_size = batch_size
            order = rng.permutation(len(texts))
            shuffled = onnx_embedder.embed([texts[i] for i in order])
            back = np.empty_like(shuffled)
            back[order] = shuffled
            assert vectors_close(back, alone), f"batch size {batch_size}"
    finally:
        onnx_embedder.batch_size = original
    assert onnx_embedder.embed([]).shape == (0, 384)


def test_intra_op_threads_sleep_between_runs(onnx_embedder: OnnxEmbedder) -> None:
    # Spinning threads burnt ~40 ms of a core per sparse change in the change agent (the
    # comment in onnx_embedder.py); the CPU figure is the bench's, the setting is checked here.
    options = onnx_embedder._session.get_session_options()
    assert options.get_session_config_entry("session.intra_op.allow_spinning") == "0"


def test_settings_choose_the_embedder(
    tmp_path: Path, onnx_embedder: OnnxEmbedder, torch_embedder: SentenceTransformerEmbedder
) -> None:
    default = embedder_from_settings(Settings(state_dir=tmp_path))
    assert isinstance(default, OnnxEmbedder) and isinstance(default, Embedder)
    assert default.name == torch_embedder.name  # same model: one cache key, vectors interchangeable
    reference = embedder_from_settings(Settings(state_dir=tmp_path, embedder="torch"))
    assert isinstance(reference, SentenceTransformerEmbedder)
    with pytest.raises(ValidationError):
        Settings(state_dir=tmp_path, embedder="tensorflow")  # type: ignore[arg-type]
    moved = embedder_from_settings(Settings(state_dir=tmp_path, embed_onnx_dir=onnx_embedder.directory))
    assert isinstance(moved, OnnxEmbedder) and moved.directory == onnx_embedder.directory


def test_a_missing_export_says_how_to_make_it(tmp_path: Path) -> None:
    with pytest.raises(EmbedderError, match="embedding.export"):
        OnnxEmbedder(tmp_path / "nothing-here")
    with pytest.raises(EmbedderError, match="embedding.export"):
        embedder_from_settings(Settings(state_dir=tmp_path, embed_onnx_dir=tmp_path))


def test_the_setup_export_is_of_the_installed_weights_and_is_not_redone() -> None:
    directory = model_dir("all-MiniLM-L6-v2")
    manifest = read_manifest(directory)
    assert manifest.source_sha256 == sha256_file(bundled_model_path() / "model.safetensors")
    assert (manifest.dim, manifest.max_seq_length, manifest.pooling, manifest.normalize) == (384, 256, "mean", True)
    before = (directory / ONNX_FILE).stat().st_mtime_ns, (directory / MANIFEST_FILE).stat().st_mtime_ns
    assert export(directory) == manifest
    assert ((directory / ONNX_FILE).stat().st_mtime_ns, (directory / MANIFEST_FILE).stat().st_mtime_ns) == before


# The change agent's process, as streams.app builds it, with torch made unimportable: it must load
# the model, embed, and stay far below torch's footprint.
AGENT_PROBE = r"""
import importlib.abc, json, sys

class NoTorch(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in {"torch", "sentence_transformers", "transformers"}:
            raise ImportError(f"{name} must not be imported at run time")
        return None

sys.meta_path.insert(0, NoTorch())
from regionsync.settings import Settings
from streams.app import build_processor

settings = Settings(state_dir=sys.argv[1], kafka_bootstrap="127.0.0.1:9", pg_port=9)
processor = build_processor(settings)
model = processor.embedder.embedder
texts = [f"passage {i}: " + "change data capture keeps every region in step " * (i % 40 + 1) for i in range(96)]
vectors = model.embed(texts)
# VmHWM: this process's own peak. (getrusage's ru_maxrss would also count the pytest parent's
# pages: Linux carries the high-water mark of the memory it replaces across exec.)
hwm_kb = next(int(line.split()[1]) for line in open("/proc/self/status") if line.startswith("VmHWM:"))
print(json.dumps({"kind": type(model).__name__, "rows": len(vectors), "peak_rss_mb": hwm_kb / 1024}))
"""


def test_the_change_agent_embeds_without_torch_in_under_500_mb(tmp_path: Path) -> None:
    proc = subprocess.run(
        [sys.executable, "-c", AGENT_PROBE, str(tmp_path)], cwd=REPO, capture_output=True, text=True, timeout=300
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    out = json.loads(proc.stdout.strip().splitlines()[-1])
    assert out["kind"] == "OnnxEmbedder" and out["rows"] == 96
    assert out["peak_rss_mb"] < 500, out
