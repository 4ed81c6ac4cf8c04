"""RegionIndexer end to end: real tansu broker, real Milvus server (C++), real model vectors."""

from __future__ import annotations

import base64
import logging
import os
import signal
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Callable, Iterator, Sequence

import numpy as np
import orjson
import pytest
from confluent_kafka import Consumer, Producer
from confluent_kafka.admin import AdminClient, NewTopic

from embedding.embedder import Embedder
from embedding.vectors import vectors_close
from indexer.lag import lag_report, region_lag
from indexer.plan import DocState
from indexer.sink import RegionSink
from indexer.worker import RegionIndexer
from mirror import policy
from regionsync.settings import Settings
from stack import milvus, procs
from streams.events import DocRecord, RecordOp

from .conftest import REGION, on_broker, record_factory

pytestmark = pytest.mark.integration  # starts real services


def with_topics(base: Settings, kafka: Settings) -> Settings:
    """``base``'s Milvus, ``kafka``'s broker, fresh topics and collection for this test."""
    suffix = uuid.uuid4().hex[:8]
    settings = on_broker(base, kafka).model_copy(
        update={
            "chunks_topic": f"chunks-{suffix}",
            "dlq_topic": f"dlq-{suffix}",
            "collection": f"docs_{suffix}",
        }
    )
    admin = AdminClient({"bootstrap.servers": settings.kafka_bootstrap})
    futures = admin.create_topics(
        [NewTopic(settings.chunks_topic, 2, 1), NewTopic(settings.dlq_topic, 1, 1)], request_timeout=10
    )
    for future in futures.values():
        future.result(10)
    return settings


class Feed:
    """Produces to the chunks topic and remembers where each partition ends."""

    def __init__(self, settings: Settings) -> None:
        self.topic = settings.chunks_topic
        self.producer = Producer({"bootstrap.servers": settings.kafka_bootstrap, "acks": "all", "linger.ms": 1})
        self.ends: dict[int, int] = {}

    def _delivered(self, err: object, msg: object) -> None:
        assert err is None, err
        p, o = msg.partition(), msg.offset()  # type: ignore[attr-defined]
        self.ends[p] = max(self.ends.get(p, 0), o + 1)

    def send(self, key: str, value: bytes | None) -> None:
        self.producer.produce(self.topic, key=key.encode(), value=value, on_delivery=self._delivered)

    def records(self, records: Sequence[DocRecord]) -> None:
        for rec in records:
            self.send(rec.doc_id, rec.to_bytes())
        assert self.producer.flush(10) == 0

    def flush(self) -> None:
        assert self.producer.flush(10) == 0


def committed(settings: Settings) -> dict[int, int | None]:
    return {p.partition: p.committed for p in lag_report(settings, REGION)}


def read_dlq(settings: Settings, expected: int, timeout: float = 20.0) -> list[dict]:
    consumer = Consumer(
        {"bootstrap.servers": settings.kafka_bootstrap, "group.id": f"dlq-reader-{uuid.uuid4().hex[:6]}",
         "auto.offset.reset": "earliest", "session.timeout.ms": 6000, "heartbeat.interval.ms": 1000,
         "fetch.wait.max.ms": 20}
    )
    consumer.subscribe([settings.dlq_topic])
    out: list[dict] = []
    deadline = time.monotonic() + timeout
    try:
        while len(out) < expected and time.monotonic() < deadline:
            msg = consumer.poll(0.5)
            if msg is None or msg.error():
                continue
            letter = orjson.loads(msg.value() or b"null")
            letter["headers"] = dict(msg.headers() or [])
            out.append(letter)
    finally:
        consumer.close()
    return out


def wait_for(check: Callable[[], bool], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if check():
                return
        except Exception:  # noqa: BLE001 - "not yet"
            pass
        time.sleep(0.2)
    raise AssertionError(f"timed out waiting for {what}")


@pytest.fixture
def run_in_thread() -> Iterator[Callable[[RegionIndexer], threading.Thread]]:
    started: list[tuple[RegionIndexer, threading.Thread]] = []

    def start(indexer: RegionIndexer) -> threading.Thread:
        thread = threading.Thread(target=indexer.run, daemon=True)
        thread.start()
        started.append((indexer, thread))
        return thread

    yield start
    for indexer, thread in started:
        indexer.stop()
        thread.join(30)
        indexer.close()


def test_applies_records_dead_letters_poison_and_commits(
    shared_milvus: Settings, kafka: Settings, embedder: Embedder
) -> None:
    settings = with_topics(shared_milvus, kafka)
    make = record_factory(embedder)
    feed = Feed(settings)
    good_a = make("a", 1, ["Alpha paragraph about glaciers.", "Second alpha paragraph on ice sheets."], title="A")
    wrong_dim = DocRecord(
        "w", 1, RecordOp.UPSERT, good_a.source,
        chunks=(type(good_a.chunks[0])(0, "x", np.ones(8, dtype=np.float32) / np.sqrt(8)),),
    )
    feed.records([good_a, make("b", 1, ["Bravo text on volcanoes."]), make("c", 1, ["Charlie on tides."])])
    feed.send("junk", b"this is not json {")
    feed.records([wrong_dim])
    feed.records(
        [
            make("a", 2, ["Alpha rewritten: glaciers retreat."], title="A2"),  # shrink 2 -> 1
            make("c", 2, op=RecordOp.DELETE),
            make("b", 2, op=RecordOp.META, title="B renamed"),
        ]
    )
    feed.send("c", None)  # Kafka tombstone after the delete
    feed.flush()

    indexer = RegionIndexer(settings, REGION)
    try:
        stats = indexer.run(max_idle_s=2.0)
    finally:
        indexer.close()

    assert stats.dead_letters == 2 and stats.records == 7
    assert stats.flushes >= 1  # went idle after writing: rows sealed for fast search
    sink = RegionSink.for_region(settings, REGION)
    rows = sink.dump_chunks()
    assert [(r["doc_id"], r["chunk_index"], r["title"], r["version"]) for r in rows] == [
        ("a", 0, "A2", 2),
        ("b", 0, "B renamed", 2),
    ]
    for row in rows:  # the model's vector for the chunk text, embedded on its own (any CPU: tolerance)
        assert vectors_close(row["embedding"], embedder.embed([row["text"]])[0])
    states = sink.doc_states()
    assert states["c"] == DocState(2, None, 0, True) and states["a"].n_chunks == 1
    assert committed(settings) == feed.ends
    assert region_lag(settings, REGION) == 0

    letters = read_dlq(settings, 2)
    by_reason = {letter["reason"]: letter for letter in letters}
    assert set(by_reason) == {"unparseable_json", "wrong_dim"}
    junk = by_reason["unparseable_json"]
    assert base64.b64decode(junk["value_b64"]) == b"this is not json {"
    assert junk["stage"] == f"indexer:{REGION}" and junk["topic"] == settings.chunks_topic
    assert junk["headers"]["regionsync.reason"] == b"unparseable_json"
    assert base64.b64decode(by_reason["wrong_dim"]["value_b64"]) == wrong_dim.to_bytes()
    sink.close()


def test_a_region_other_than_the_source_applies_its_copy_of_the_chunks_topic(
    shared_milvus: Settings, kafka: Settings, hash_record: Callable[..., DocRecord]
) -> None:
    # Two regions whose brokers are one here, so the source's own chunks topic sits beside north's
    # copy of it: north's indexer must read the copy (east.<chunks>), never the original.
    one = with_topics(shared_milvus, kafka)
    settings = Settings(**{
        **one.model_dump(), "regions": [REGION, "north"], "pg_addresses": {}, "s3_endpoints": {},
        "kafka_bootstraps": {REGION: kafka.kafka_bootstrap, "north": kafka.kafka_bootstrap},
        "milvus_uris": {REGION: one.milvus_uri(REGION), "north": one.milvus_uri(REGION)},
    })
    copy = policy.chunks_topic_in(settings, "north")
    assert copy == f"{REGION}.{settings.chunks_topic}" and policy.chunks_topic_in(settings, REGION) == settings.chunks_topic
    admin = AdminClient({"bootstrap.servers": kafka.kafka_bootstrap})
    admin.create_topics([NewTopic(copy, 2, 1)], request_timeout=10)[copy].result(10)

    Feed(settings).records([hash_record("only-in-the-source-topic", 1, ["never read by north"])])
    feed = Feed(settings)
    feed.topic = copy
    feed.records([hash_record(f"copied-{i}", 1, [f"copied {i}"]) for i in range(6)])

    indexer = RegionIndexer(settings, "north")
    assert indexer.topic == copy
    try:
        stats = indexer.run(max_idle_s=2.0)
    finally:
        indexer.close()
    assert stats.records == 6 and stats.dead_letters == 0
    sink = RegionSink.for_region(settings, "north")
    assert set(sink.doc_states()) == {f"copied-{i}" for i in range(6)}
    sink.close()
    report = lag_report(settings, "north")
    assert {p.partition: p.committed for p in report} == feed.ends and sum(p.lag for p in report) == 0
    # north's group is its own: the source region's has committed nothing on the source's topic.
    assert all(p.committed is None for p in lag_report(settings, REGION))


def test_milvus_outage_holds_the_batch_then_catches_up(
    own_milvus: Settings,
    kafka: Settings,
    hash_record: Callable[..., DocRecord],
    run_in_thread: Callable[[RegionIndexer], threading.Thread],
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO, logger="indexer.worker")
    caplog.set_level(logging.INFO, logger="indexer.hold")  # the held batch's outage lines
    settings = with_topics(own_milvus, kafka)
    feed = Feed(settings)
    feed.records([hash_record(f"first-{i}", 1, [f"first {i} a", f"first {i} b"]) for i in range(10)])
    indexer = RegionIndexer(settings, REGION, retry_initial_s=0.1, retry_max_s=0.5)
    run_in_thread(indexer)
    probe = RegionSink.for_region(settings, REGION)
    wait_for(lambda: probe.count() == 20, 30, "first batch indexed")
    wait_for(lambda: committed(settings) == feed.ends, 10, "first batch committed")
    held = dict(feed.ends)

    procs.kill9(settings.state_dir, milvus.proc_name(REGION))
    feed.records([hash_record(f"second-{i}", 1, [f"second {i}"]) for i in range(10)])
    wait_for(lambda: indexer.stats.apply_retries >= 5, 30, "worker retrying")
    assert indexer.stats.outages == 1
    assert committed(settings) == held  # nothing committed while Milvus is down

    milvus.start(settings, REGION)
    wait_for(lambda: committed(settings) == feed.ends, 60, "catch-up committed")
    assert probe.count() == 30
    assert set(probe.doc_states()) == {f"first-{i}" for i in range(10)} | {f"second-{i}" for i in range(10)}
    outage_logs = [r for r in caplog.records if "unavailable" in r.getMessage()]
    assert len(outage_logs) == 1, [r.getMessage() for r in outage_logs]
    assert any("back after" in r.getMessage() for r in caplog.records)
    probe.close()


def test_entry_point_indexes_and_stops_on_sigterm(
    shared_milvus: Settings, kafka: Settings, hash_record: Callable[..., DocRecord]
) -> None:
    settings = with_topics(shared_milvus, kafka)
    Feed(settings).records([hash_record("doc", 1, ["one", "two"])])
    env = {**os.environ, **settings.to_env()}
    child = subprocess.Popen(
        [sys.executable, "-m", "indexer.worker", "--region", REGION],
        env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
    )
    try:
        probe = RegionSink.for_region(settings, REGION)
        wait_for(lambda: probe.count() == 2 and region_lag(settings, REGION) == 0, 40, "worker indexed the doc")
        child.send_signal(signal.SIGTERM)
        out, _ = child.communicate(timeout=20)
    finally:
        if child.poll() is None:
            child.kill()
    assert child.returncode == 0, out
    assert "stopped" in out
    probe.close()
