"""One contract, two implementations: the in-memory FakeIndex (unit tests' stand-in) and a real
Milvus (RegionSink writing, MilvusIndexReader reading). Every case runs against both, so the fake
behaves as Milvus does: version guard, shrink, delete markers, re-labelling, search, bad records."""

from __future__ import annotations

from collections.abc import Iterator
from typing import NamedTuple

import pytest

from embedding.hash_embedder import HashEmbedder
from indexer.errors import InvalidRecord
from indexer.milvus_reader import MilvusIndexReader
from indexer.ports import IndexReader, IndexWriter
from indexer.sink import RegionSink
from regionsync.settings import Settings
from streams.events import Chunk, DocRecord, RecordOp

from .conftest import REGION, RecordFactory, record_factory
from .fake_index import FakeIndex


class Index(NamedTuple):
    writer: IndexWriter
    reader: IndexReader


@pytest.fixture(params=["fake", pytest.param("milvus", marks=pytest.mark.integration)])
def index(request: pytest.FixtureRequest, collection_name: str) -> Iterator[Index]:
    if request.param == "fake":
        fake = FakeIndex(384)
        yield Index(fake, fake)
        return
    milvus_settings: Settings = request.getfixturevalue("shared_milvus")
    settings = milvus_settings.model_copy(update={"collection": collection_name})
    writer = RegionSink(settings.milvus_uri(REGION), collection=collection_name, dim=384)
    writer.ping()  # creates the collections
    reader = MilvusIndexReader.for_region(settings, REGION)
    try:
        yield Index(writer, reader)
    finally:
        reader.close()
        writer.close()


@pytest.fixture
def rec() -> RecordFactory:
    return record_factory(HashEmbedder(384))


def texts(reader: IndexReader, doc_id: str) -> list[str]:
    return [r["text"] for r in reader.dump_chunks() if r["doc_id"] == doc_id]


def test_a_newer_version_replaces_an_older_one_and_a_late_old_one_is_stale(index: Index, rec: RecordFactory) -> None:
    index.writer.apply([rec("d1", 1, ["one", "two", "three"])])
    stats = index.writer.apply([rec("d1", 3, ["uno"]), rec("d1", 2, ["dos", "tres"])])  # v2 arrives late
    assert (stats.upserted, stats.stale) == (1, 1)
    assert texts(index.reader, "d1") == ["uno"]  # shrunk: chunks 1 and 2 are gone
    assert index.reader.doc_state("d1") == (3, index.reader.doc_state("d1").content_hash, 1, False)  # type: ignore[union-attr]
    again = index.writer.apply([rec("d1", 3, ["uno"])])  # a redelivery
    assert (again.upserted, again.stale) == (0, 1)
    assert index.reader.count() == 1


def test_a_delete_leaves_a_marker_that_an_older_upsert_cannot_pass(index: Index, rec: RecordFactory) -> None:
    index.writer.apply([rec("d2", 1, ["alpha", "beta"]), rec("d3", 1, ["keep me"])])
    index.writer.apply([rec("d2", 4, op=RecordOp.DELETE)])
    index.writer.apply([rec("d2", 2, ["resurrected?"])])
    assert texts(index.reader, "d2") == []
    state = index.reader.doc_state("d2")
    assert state is not None and (state.version, state.deleted, state.n_chunks) == (4, True, 0)
    assert texts(index.reader, "d3") == ["keep me"]
    assert set(index.reader.doc_states()) == {"d2", "d3"}
    assert index.reader.doc_state("never") is None


def test_a_meta_record_relabels_the_held_text_and_asks_for_a_document_it_lacks(index: Index, rec: RecordFactory) -> None:
    up = rec("d4", 1, ["body text"], title="Old", tags=["a"])
    index.writer.apply([up])
    stats = index.writer.apply([
        rec("d4", 2, op=RecordOp.META, title="New", tags=["b", "c"], content_hash=up.content_hash),
        rec("d5", 2, op=RecordOp.META, title="Unknown", content_hash="0" * 64),
    ])
    assert stats.relabelled == 1 and stats.meta_missing == ["d5"] and [h.doc_id for h in stats.heal] == ["d5"]
    (row,) = [r for r in index.reader.dump_chunks() if r["doc_id"] == "d4"]
    assert (row["title"], list(row["tags"]), row["text"], row["version"]) == ("New", ["b", "c"], "body text", 2)
    assert index.reader.doc_state("d5") is None


def test_search_finds_the_same_vector_first_with_its_source(index: Index, rec: RecordFactory) -> None:
    records = [rec(f"s{i}", 1, [f"passage number {i}"]) for i in range(5)]
    index.writer.apply(records)
    target = records[3].chunks[0]
    hits = index.reader.search(target.embedding, k=3)
    assert len(hits) == 3 and hits[0].doc_id == "s3" and hits[0].text == "passage number 3"
    assert hits[0].score == pytest.approx(1.0, abs=1e-3)
    assert hits[0].score >= hits[1].score >= hits[2].score
    assert hits[0].source["offset"] == records[3].source.offset and hits[0].version == 1


def test_a_record_with_a_wrong_vector_is_refused_before_anything_is_written(index: Index, rec: RecordFactory) -> None:
    good = rec("d6", 1, ["fine"])
    bad = DocRecord(doc_id="d7", version=1, op=RecordOp.UPSERT, source=good.source, content_hash=good.content_hash,
                    title="t", chunks=(Chunk(0, "short vector", good.chunks[0].embedding[:10]),))
    with pytest.raises(InvalidRecord):
        index.writer.apply([good, bad])
    assert index.reader.count() == 0 and index.reader.doc_states() == {}
