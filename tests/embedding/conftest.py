"""Fixtures of the embedding tests: the real model both ways (ONNX Runtime, and sentence-transformers
as the reference), offline, and a real Postgres (the source region's) for the cache."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from embedding.model_files import model_dir
from embedding.onnx_embedder import OnnxEmbedder
from embedding.torch_embedder import SentenceTransformerEmbedder
from regionsync.settings import Settings
from stack import postgres
from tests.stacks import free_settings
from tests.state_dirs import private_state_dir


@pytest.fixture(scope="session")
def torch_embedder() -> SentenceTransformerEmbedder:
    """The reference: the model's own sentence-transformers pipeline on torch."""
    return SentenceTransformerEmbedder()


@pytest.fixture(scope="session")
def onnx_embedder() -> OnnxEmbedder:
    """The run-time embedder, on the export scripts/setup.sh made in vendor/models/."""
    return OnnxEmbedder(model_dir("all-MiniLM-L6-v2"), batch_size=32, threads=2)


@pytest.fixture(scope="package")
def pg_settings() -> Iterator[Settings]:
    """The source region's Postgres alone (the embedding cache lives there), on a free port; the
    settings are the source region's view (its server is pg_host/pg_port)."""
    # A private state dir, not pytest's tmp_path: the postgres user must reach the data dir.
    with private_state_dir("embedding-pg") as state:
        settings = free_settings(state)
        source = settings.source_region
        try:
            postgres.start(settings, source)
            yield settings.source()
        finally:
            postgres.stop(settings, source)
