"""Fixtures of the embedding tests: the real model (offline) and a real Postgres for the cache."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from embedding.torch_embedder import SentenceTransformerEmbedder
from regionsync.settings import Settings
from regionsync.stack import postgres, procs


@pytest.fixture(scope="session")
def embedder() -> SentenceTransformerEmbedder:
    return SentenceTransformerEmbedder()


@pytest.fixture(scope="package")
def pg_settings(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Settings]:
    settings = Settings(state_dir=tmp_path_factory.mktemp("pg"), pg_port=procs.free_port())
    postgres.start(settings)
    try:
        yield settings
    finally:
        postgres.stop(settings)
