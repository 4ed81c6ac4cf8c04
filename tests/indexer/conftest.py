"""Fixtures of the indexer tests: real tansu (on its real object store), real Milvus servers (C++),
real model.

Every service gets a free port (tests.stacks.free_settings) and a directory under pytest's tmp
dir, so parallel test sessions on one machine never meet. Services are started once per session where tests can share them;
tests that stop a service (outage drills) get their own.
"""

from __future__ import annotations

import gc
import itertools
import uuid
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path

import numpy as np
import pytest

from embedding.embedder import Embedder
from embedding.hash_embedder import HashEmbedder
from embedding.runtime import embedder_from_settings
from regionsync.settings import Settings
from stack import broker, milvus, seaweed
from streams.events import Chunk, DocRecord, RecordOp, SourceRef
from streams.events import content_hash as text_hash
from tests.stacks import free_settings

REGION = "east"


def make_settings(state_dir: Path, **overrides: object) -> Settings:
    """One region (the source: its indexer reads the plain chunks topic), every port free."""
    values: dict[str, object] = dict(
        chunks_topic=f"chunks-{uuid.uuid4().hex[:8]}",
        dlq_topic=f"dlq-{uuid.uuid4().hex[:8]}",
        topic_partitions=2,
    )
    values.update(overrides)
    return free_settings(state_dir, regions=[REGION], **values)


def on_broker(settings: Settings, kafka: Settings) -> Settings:
    """``settings`` with ``kafka``'s broker as the region's: the map too, which ``for_region``
    (every region-bound class) reads, not only the flat value."""
    return settings.model_copy(update={"kafka_bootstrap": kafka.kafka_bootstrap,
                                       "kafka_bootstraps": {REGION: kafka.kafka_bootstrap}})


@pytest.fixture(scope="session")
def embedder(tmp_path_factory: pytest.TempPathFactory) -> Embedder:
    """The run-time model (ONNX by default), as the change agent and search load it."""
    return embedder_from_settings(Settings(state_dir=tmp_path_factory.mktemp("model")))


@pytest.fixture(scope="session")
def hash_embedder() -> HashEmbedder:
    return HashEmbedder(384)


@pytest.fixture(scope="package")
def shared_milvus(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Settings]:
    """One Milvus server for tests that do not stop it; each test uses its own collection."""
    settings = make_settings(tmp_path_factory.mktemp("milvus"))
    milvus.start(settings, REGION)
    try:
        yield settings
    finally:
        milvus.stop(settings, REGION)


@pytest.fixture
def own_milvus(tmp_path: Path) -> Iterator[Settings]:
    """A Milvus server this test may stop and start (``milvus.stop/start(settings, REGION)``)."""
    settings = make_settings(tmp_path)
    milvus.start(settings, REGION)
    try:
        yield settings
    finally:
        milvus.stop(settings, REGION)


@pytest.fixture(scope="package")
def kafka(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Settings]:
    """The region's broker, on its object store (where it keeps its log)."""
    settings = make_settings(tmp_path_factory.mktemp("broker"))
    seaweed.start(settings, REGION)
    try:
        broker.start(settings, REGION)
        try:
            yield settings
        finally:
            gc.collect()  # destroy leftover Kafka clients first, or librdkafka logs reconnect errors
            broker.stop(settings, REGION)
    finally:
        seaweed.stop(settings, REGION)


@pytest.fixture
def collection_name() -> str:
    return f"docs_{uuid.uuid4().hex[:10]}"


_offsets = itertools.count()


def source(lsn: int | None = None) -> SourceRef:
    return SourceRef(kind="debezium", topic="cms.public.documents", partition=0, offset=next(_offsets), lsn=lsn, op="u")


RecordFactory = Callable[..., DocRecord]


def record_factory(embed: Embedder) -> RecordFactory:
    """Build DocRecords whose chunk vectors are ``embed``'s vectors of the chunk texts."""

    def make(
        doc_id: str,
        version: int | None,
        texts: Sequence[str] = (),
        op: RecordOp = RecordOp.UPSERT,
        title: str = "",
        tags: Sequence[str] = (),
        status: str = "published",
        content_hash: str | None = None,
    ) -> DocRecord:
        chunks: tuple[Chunk, ...] = ()
        if op is RecordOp.UPSERT and texts:
            vectors = embed.embed(list(texts))
            chunks = tuple(Chunk(i, t, np.asarray(v, dtype=np.float32)) for i, (t, v) in enumerate(zip(texts, vectors, strict=True)))
        return DocRecord(
            doc_id=doc_id,
            version=version,
            op=op,
            source=source(lsn=version),
            content_hash=text_hash("\n".join(texts)) if op is RecordOp.UPSERT else content_hash,
            title=title or f"Title of {doc_id}",
            tags=tuple(tags),
            status=status,
            chunks=chunks,
        )

    return make


@pytest.fixture
def hash_record(hash_embedder: HashEmbedder) -> RecordFactory:
    return record_factory(hash_embedder)
