"""The region's Milvus as the embedded stack runs it: milvus-lite 2.5.1's C++ server, started,
stopped, killed and restarted through ``stack.milvus``; every acknowledged row survives."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from pymilvus import MilvusClient

from embedding.vectors import vectors_close
from indexer.sink import RegionSink
from regionsync.errors import StackError
from regionsync.settings import Settings
from stack import milvus, procs
from streams.events import RecordOp

from .conftest import REGION, RecordFactory, make_settings

pytestmark = pytest.mark.integration

N_DOCS = 400


def _fill(sink: RegionSink, make: RecordFactory) -> None:
    """N_DOCS documents of 3 chunks, then every 10th deleted and every 7th rewritten to 2 chunks:
    inserts, deletes and overwrites all have to survive."""
    docs = [make(f"doc-{i:04d}", 1, [f"doc {i} part {j}" for j in range(3)], tags=[f"t{i % 5}"]) for i in range(N_DOCS)]
    for start in range(0, N_DOCS, 100):
        sink.apply(docs[start : start + 100])
    sink.apply([make(f"doc-{i:04d}", 2, op=RecordOp.DELETE) for i in range(0, N_DOCS, 10)])
    sink.apply([make(f"doc-{i:04d}", 3, [f"doc {i} new {j}" for j in range(2)]) for i in range(7, N_DOCS, 70)])


def _assert_same(before: list[dict], after: list[dict]) -> None:
    assert [r["id"] for r in after] == [r["id"] for r in before]
    scalar = [k for k in before[0] if k != "embedding"]
    assert [{k: r[k] for k in scalar} for r in after] == [{k: r[k] for k in scalar} for r in before]
    assert vectors_close(np.stack([r["embedding"] for r in after]), np.stack([r["embedding"] for r in before]))


def _assert_exact_search(sink: RegionSink, rows: list[dict], seed: int) -> None:
    """The index answers like a brute-force scan of the stored vectors (FLAT is exact)."""
    matrix = np.stack([r["embedding"] for r in rows]).astype(np.float64)
    queries = np.random.default_rng(seed).standard_normal((5, matrix.shape[1]))
    for q in queries / np.linalg.norm(queries, axis=1, keepdims=True):
        scores = matrix @ q
        expected = [(rows[i]["doc_id"], rows[i]["chunk_index"]) for i in np.argsort(-scores)[:5]]
        hits = sink.search(q.astype(np.float32), k=5)
        assert [(h.doc_id, h.chunk_index) for h in hits] == expected
        assert np.allclose([h.score for h in hits], np.sort(scores)[::-1][:5], atol=1e-5)


def test_every_row_survives_kill9_and_a_restart_through_the_stack(own_milvus: Settings, hash_record: RecordFactory) -> None:
    sink = RegionSink(own_milvus.milvus_uri(REGION), timeout_s=5)
    try:
        _fill(sink, hash_record)
        before, states = sink.dump_chunks(), sink.doc_states()
        assert len(before) == N_DOCS * 3 - (N_DOCS // 10) * 3 - len(range(7, N_DOCS, 70))

        procs.kill9(own_milvus.state_dir, milvus.proc_name(REGION))
        milvus.start(own_milvus, REGION)  # at once: the dead server's port and lock are free

        _assert_same(before, sink.dump_chunks())
        assert sink.doc_states() == states
        _assert_exact_search(sink, before, seed=1)
        # ...and it takes writes again.
        sink.apply([hash_record("after-crash", 1, ["one more"])])
        assert sink.count() == len(before) + 1
    finally:
        sink.close()


def test_a_restart_right_after_kill9_finds_the_port_free(own_milvus: Settings) -> None:
    # A killed server's main thread turns zombie while its other threads still hold the port;
    # stop/kill9 must wait for all of them, or the next start finds the port "in use".
    for _ in range(8):
        procs.kill9(own_milvus.state_dir, milvus.proc_name(REGION))
        milvus.start(own_milvus, REGION)
    assert milvus.is_up(own_milvus, REGION)


def test_clean_stop_then_start_keeps_the_data(own_milvus: Settings, hash_record: RecordFactory) -> None:
    sink = RegionSink(own_milvus.milvus_uri(REGION), timeout_s=5)
    try:
        _fill(sink, hash_record)
        before = sink.dump_chunks()
        assert milvus.stop(own_milvus, REGION) is True
        assert not milvus.is_up(own_milvus, REGION)
        assert procs.read_proc(own_milvus.state_dir, milvus.proc_name(REGION)) is None
        assert milvus.stop(own_milvus, REGION) is False  # nothing left to stop

        milvus.start(own_milvus, REGION)
        assert milvus.is_up(own_milvus, REGION)
        _assert_same(before, sink.dump_chunks())
        _assert_exact_search(sink, before, seed=2)
    finally:
        sink.close()


def test_a_second_server_on_the_same_data_is_refused_until_the_first_is_gone(own_milvus: Settings) -> None:
    # The binary itself would happily serve a database another server has open (measured).
    client = MilvusClient(uri=own_milvus.milvus_uri(REGION))
    try:
        client.create_collection("kept", dimension=4)
        other = make_settings(own_milvus.state_dir)  # same data dir, another port
        with pytest.raises(StackError, match="in use by another server"):
            milvus.start(other, REGION)
        assert not milvus.is_up(other, REGION)
        assert client.list_collections() == ["kept"]

        procs.kill9(own_milvus.state_dir, milvus.proc_name(REGION))  # a kill -9 releases the lock
        milvus.start(other, REGION)
        try:
            other_client = MilvusClient(uri=other.milvus_uri(REGION))
            assert other_client.list_collections() == ["kept"]
            other_client.close()
        finally:
            milvus.stop(other, REGION)
    finally:
        client.close()


def test_a_milvus_lite_3_data_dir_is_refused_not_served_empty(tmp_path: Path) -> None:
    settings = make_settings(tmp_path)
    old = milvus.data_dir(settings, REGION)
    old.mkdir(parents=True)
    (old / "wal").mkdir()
    with pytest.raises(StackError, match="no milvus.db"):
        milvus.start(settings, REGION)
    assert not milvus.is_up(settings, REGION)
    assert procs.read_proc(settings.state_dir, milvus.proc_name(REGION)) is None
