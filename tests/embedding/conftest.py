"""Fixtures of the embedding tests: the real model both ways (ONNX Runtime, and sentence-transformers
as the reference), offline, and a real Postgres for the cache."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from embedding.model_files import model_dir
from embedding.onnx_embedder import OnnxEmbedder
from embedding.torch_embedder import SentenceTransformerEmbedder
from regionsync.settings import Settings
from regionsync.stack import postgres, procs


@pytest.fixture(scope="session")
def torch_embedder() -> SentenceTransformerEmbedder:
    """The reference: the model's own sentence-transformers pipeline on torch."""
    return SentenceTransformerEmbedder()


@pytest.fixture(scope="session")
def onnx_embedder() -> OnnxEmbedder:
    """The run-time embedder, on the export scripts/setup.sh made in vendor/models/."""
    return OnnxEmbedder(model_dir("all-MiniLM-L6-v2"), batch_size=32, threads=2)


@pytest.fixture(scope="package")
def pg_settings(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Settings]:
    settings = Settings(state_dir=tmp_path_factory.mktemp("pg"), pg_port=procs.free_port())
    postgres.start(settings)
    try:
        yield settings
    finally:
        postgres.stop(settings)
