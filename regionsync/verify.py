"""Does every region hold what the source says? Report every difference, not just the first.

The source of truth is the CMS table in Postgres (published rows) plus the newest event per
document on the CMS producers' topic, for documents that do not live in the table. What a region
must hold for each such document: its content hash, its chunk texts (the same chunker), title and
tags; optionally the exact version (WAL position / CMS version, folded from the topics) and the
exact vectors (the model's embedding of each chunk text). Used by the tests, the demo and drills.
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import psycopg
from confluent_kafka import Consumer, KafkaError, TopicPartition

from regionsync.errors import RegionsyncError
from regionsync.kafka import EndsUnknown, fetch_ends
from regionsync.settings import Settings
from streams import cms, debezium
from streams.capture import CaptureSpec
from streams.chunking import chunk_text
from streams.errors import PoisonEvent
from streams.events import ChangeKind, DocumentChange, content_hash

# The model's float results differ in the last bits between CPUs (AMD vs Intel kernels) and between
# batch shapes, so a stored vector is "the model's embedding" when it points the same way and has
# the same values up to rounding, never when its bytes are equal.
COSINE_MIN = 0.99999
ATOL = 1e-5


def vectors_close(a: Any, b: Any, cosine_min: float = COSINE_MIN, atol: float = ATOL) -> bool:
    """True when every row of ``a`` matches the same row of ``b`` within the tolerance
    (cosine >= ``cosine_min`` and element-wise ``allclose(atol=atol)``). 1-d or 2-d inputs."""
    x = np.atleast_2d(np.asarray(a, dtype=np.float64))
    y = np.atleast_2d(np.asarray(b, dtype=np.float64))
    if x.shape != y.shape:
        return False
    if not np.allclose(x, y, rtol=0.0, atol=atol):
        return False
    norms = np.linalg.norm(x, axis=1) * np.linalg.norm(y, axis=1)
    zero = norms == 0.0
    # Two zero vectors are equal (allclose said so); cosine is undefined for them.
    cos = np.einsum("ij,ij->i", x, y)[~zero] / norms[~zero]
    return bool(np.all(cos >= cosine_min))


@dataclass(frozen=True)
class ExpectedDoc:
    doc_id: str
    content_hash: str
    chunks: tuple[str, ...]
    title: str
    tags: tuple[str, ...]
    version: int | None = None  # known when folded from a topic


@dataclass
class RegionReport:
    region: str
    documents: int = 0
    chunks: int = 0
    differences: list[str] = field(default_factory=list)

    @property
    def matches(self) -> bool:
        return not self.differences


def expected_from_change(change: DocumentChange, settings: Settings) -> ExpectedDoc | None:
    if change.kind is not ChangeKind.UPSERT or change.text is None:
        return None
    return ExpectedDoc(
        change.doc_id,
        content_hash(change.text),
        tuple(chunk_text(change.text, settings.chunk_size, settings.chunk_overlap)),
        change.title,
        change.tags,
        change.version,
    )


def expected_from_postgres(settings: Settings) -> dict[str, ExpectedDoc]:
    """Published rows of the captured table, as a region must hold them (versions unknown here)."""
    spec = CaptureSpec.from_settings(settings)
    from streams.events import SourceRef

    ref = SourceRef("postgres", settings.capture_table, 0, 0)
    out: dict[str, ExpectedDoc] = {}
    # The CMS database is in the source region's Postgres, whichever region ``settings`` were made for.
    with psycopg.connect(settings.source().pg_dsn()) as conn, conn.cursor() as cur:
        cur.execute(f"SELECT * FROM {settings.capture_table}")  # noqa: S608 - table name is configuration
        names = [d.name for d in cur.description or []]
        for values in cur:
            row = dict(zip(names, values, strict=True))
            try:
                change = spec.change_from_row(str(row[spec.key_column]), 0, row, ref)
            except PoisonEvent:
                continue  # no region can hold this row: the change agent dead-letters its changes
            exp = expected_from_change(change, settings)
            if exp is not None:
                out[exp.doc_id] = dataclasses.replace(exp, version=None)  # the table has no version
    return out


class ReadTimeout(RegionsyncError):
    """A topic was not read to its end in time: what was read is not the whole topic."""


def read_topic(settings: Settings, topic: str, *, timeout: float = 60.0, region: str | None = None) -> Iterator[Any]:
    """Every record of ``topic`` from the beginning, on ``region``'s broker (default: the source
    region's, where the CMS, change and chunks topics live), without joining a group.

    "The end" is where the fetch path says each partition ends when the read starts
    (:func:`regionsync.kafka.fetch_ends`): tansu's ListOffsets answer can be far below the real
    end, so it is not trusted. A partition is read once the consumer passed that end or reported
    EOF at it (an offset without a record, e.g. a transaction marker, is never delivered). Raises
    :class:`ReadTimeout` (after yielding what it read) if that takes longer than ``timeout``.
    """
    bootstrap = settings.for_region(region or settings.source_region).kafka_bootstrap
    consumer = Consumer(
        {
            "bootstrap.servers": bootstrap,
            "group.id": f"regionsync-verify-{time.monotonic_ns()}",
            "enable.auto.commit": False,
            "enable.partition.eof": True,
            "fetch.wait.max.ms": settings.fetch_wait_max_ms,
        }
    )
    try:
        meta = consumer.list_topics(topic, timeout=10).topics.get(topic)
        if meta is None or meta.error is not None:
            return
        parts = sorted(meta.partitions)
        # A busy broker can take seconds to answer a fetch (seen: > 10 s under a 1,000-change load on 2 cores).
        ends = {p: end for (_t, p), end in fetch_ends(bootstrap, [(topic, p) for p in parts], timeout).items()}
        consumer.assign([TopicPartition(topic, p, 0) for p in parts])
        reached = dict.fromkeys(parts, 0)  # next offset to read, or where EOF was reported
        deadline = time.monotonic() + timeout
        while any(reached[p] < ends[p] for p in parts):
            if time.monotonic() > deadline:
                short = {p: (reached[p], ends[p]) for p in parts if reached[p] < ends[p]}
                raise ReadTimeout(f"{topic} at {bootstrap}: partitions not read to their end in "
                                  f"{timeout:.0f}s (reached, end): {short}")
            for msg in consumer.consume(1000, 0.2):
                err, p = msg.error(), int(msg.partition() or 0)
                if err is None:
                    reached[p] = max(reached[p], int(msg.offset() or 0) + 1)
                    yield msg
                elif err.code() == KafkaError._PARTITION_EOF:
                    reached[p] = max(reached[p], int(msg.offset() or 0))
    finally:
        consumer.close()


def newest_events(
    settings: Settings, topic: str, parse: Callable[..., DocumentChange]
) -> dict[str, tuple[DocumentChange, Any]]:
    """Newest change per document on a source topic, with the message it came from (so a
    reconcile can publish that very event again). Poison is skipped: it is in the dead-letter topic."""
    spec = CaptureSpec.from_settings(settings)
    newest: dict[str, tuple[DocumentChange, Any]] = {}
    for msg in read_topic(settings, topic):
        try:
            change = parse(msg.key(), msg.value(), spec, msg.topic(), msg.partition(), msg.offset())
        except PoisonEvent:
            continue
        if change.version is None:
            continue
        current = newest.get(change.doc_id)
        if current is None or current[0].version is None or change.version >= current[0].version:
            newest[change.doc_id] = (change, msg)
    return newest


def fold_topic_versions(settings: Settings, topic: str, parse: Callable[..., DocumentChange]) -> dict[str, DocumentChange]:
    """Newest change per document on a source topic (poison skipped: it is in the dead-letter topic)."""
    return {doc_id: change for doc_id, (change, _msg) in newest_events(settings, topic, parse).items()}


def expected_state(
    settings: Settings, with_versions: bool = False, cms_newest: Mapping[str, DocumentChange] | None = None
) -> dict[str, ExpectedDoc]:
    """What every region must hold: the table's published rows, plus CMS-published documents
    (``cms_newest``: the newest CMS change per document, when the caller has read the topic already)."""
    expected = expected_from_postgres(settings)
    if with_versions:
        lsn = fold_topic_versions(settings, settings.cdc_topic, debezium.parse)
        expected = {
            k: ExpectedDoc(v.doc_id, v.content_hash, v.chunks, v.title, v.tags, lsn[k].version if k in lsn else None)
            for k, v in expected.items()
        }
    if cms_newest is None:
        cms_newest = fold_topic_versions(settings, settings.cms_topic, cms.parse)
    for doc_id, change in cms_newest.items():
        if doc_id in expected:
            continue
        exp = expected_from_change(change, settings)
        if exp is not None:
            expected[doc_id] = exp
    return expected


# Kinds of difference for a document both the source and the region hold (drills/diff.py
# classifies on them): the chunk set is inconsistent in itself, or the region's copy is older.
CHUNKS_WRONG = "chunks_wrong"
STALE = "stale"


def document_differences(
    region: str, exp: ExpectedDoc, doc_rows: Sequence[dict[str, Any]]
) -> list[tuple[str, str]]:
    """Every difference between one document's chunk rows in ``region`` and ``exp``, as
    (kind, message): ``chunks_wrong`` when the rows do not form one whole state (gaps in the chunk
    indexes, several versions, the right text hash over the wrong chunk texts), ``stale`` when
    they form one but not the source's (other text, title, tags or version)."""
    doc_id = exp.doc_id
    out: list[tuple[str, str]] = []
    rows = sorted(doc_rows, key=lambda r: int(r["chunk_index"]))
    texts = tuple(str(r["text"]) for r in rows)
    hashes = {r["content_hash"] for r in rows}
    versions = {int(r["version"]) for r in rows}
    if [int(r["chunk_index"]) for r in rows] != list(range(len(rows))):
        out.append((CHUNKS_WRONG, f"{region}: {doc_id} chunk indexes {[r['chunk_index'] for r in rows]} are not 0..n-1"))
    if hashes != {exp.content_hash}:
        kind = CHUNKS_WRONG if len(hashes) > 1 else STALE
        out.append((kind, f"{region}: {doc_id} content hash {sorted(hashes)} != {exp.content_hash}"))
    if texts != exp.chunks:
        kind = CHUNKS_WRONG if hashes == {exp.content_hash} else STALE
        out.append((kind, f"{region}: {doc_id} has {len(texts)} chunks that differ from the source's {len(exp.chunks)}"))
    if len(versions) != 1:
        out.append((CHUNKS_WRONG, f"{region}: {doc_id} chunks carry several versions {sorted(versions)}"))
    elif exp.version is not None and versions != {exp.version}:
        out.append((STALE, f"{region}: {doc_id} version {next(iter(versions))} != source version {exp.version}"))
    titles = {r["title"] for r in rows}
    if titles != {exp.title}:
        out.append((STALE, f"{region}: {doc_id} title {sorted(titles)} != {exp.title!r}"))
    tags = {tuple(r.get("tags") or ()) for r in rows}
    if tags != {exp.tags}:
        out.append((STALE, f"{region}: {doc_id} tags {sorted(tags)} != {list(exp.tags)}"))
    return out


def compare_region(
    region: str,
    expected: dict[str, ExpectedDoc],
    chunk_rows: Sequence[dict[str, Any]],
    embed: Callable[[Sequence[str]], np.ndarray] | None = None,
) -> RegionReport:
    report = RegionReport(region, chunks=len(chunk_rows))
    by_doc: dict[str, list[dict[str, Any]]] = {}
    for row in chunk_rows:
        by_doc.setdefault(str(row["doc_id"]), []).append(row)
    report.documents = len(by_doc)
    diffs = report.differences
    for doc_id in sorted(set(expected) - set(by_doc)):
        diffs.append(f"{region}: missing document {doc_id}")
    for doc_id in sorted(set(by_doc) - set(expected)):
        diffs.append(f"{region}: document {doc_id} should not be there (deleted or unpublished)")
    for doc_id in sorted(set(expected) & set(by_doc)):
        diffs.extend(message for _kind, message in document_differences(region, expected[doc_id], by_doc[doc_id]))
    if embed is not None and chunk_rows:
        want = embed([str(r["text"]) for r in chunk_rows])
        for row, vec in zip(chunk_rows, want, strict=True):
            if not vectors_close(row["embedding"], vec):
                diffs.append(f"{region}: {row['doc_id']}#{row['chunk_index']} vector differs from the model's embedding")
    return report


def region_report(
    settings: Settings,
    region: str,
    expected: dict[str, ExpectedDoc],
    embed: Callable[[Sequence[str]], np.ndarray] | None = None,
    sink: Any = None,
    attempts: int = 3,
) -> RegionReport:
    """Compare one region with ``expected``. A region that does not answer is retried a few times
    (a busy Milvus server can refuse a connection under load) before the error propagates."""
    from indexer.errors import RegionUnavailable
    from indexer.sink import RegionSink

    own = sink is None
    sink = sink or RegionSink.for_region(settings, region)
    try:
        for attempt in range(attempts):
            try:
                rows = sink.dump_chunks()
                break
            except RegionUnavailable:
                if attempt == attempts - 1:
                    raise
                time.sleep(1.0)
        return compare_region(region, expected, rows, embed)
    finally:
        if own:
            sink.close()


def wait_converged(
    settings: Settings,
    regions: Sequence[str] | None = None,
    timeout: float = 120.0,
    with_versions: bool = False,
    interval: float = 0.5,
) -> dict[str, RegionReport]:
    """Poll until every region matches the source; return the last reports (check ``.matches``)."""
    from indexer.sink import RegionSink

    regions = list(regions or settings.regions)
    deadline = time.monotonic() + timeout
    sinks = {region: RegionSink.for_region(settings, region) for region in regions}
    reports: dict[str, RegionReport] = {}
    try:
        while True:
            try:
                expected = expected_state(settings, with_versions)
            except (EndsUnknown, ReadTimeout):  # the source's broker is too busy to answer now: not yet
                if time.monotonic() > deadline:
                    raise
                time.sleep(interval)
                continue
            # Every region is checked each round: the source may have moved since it last matched.
            for region in regions:
                try:
                    reports[region] = region_report(settings, region, expected, sink=sinks[region], attempts=1)
                except Exception as exc:  # noqa: BLE001 - a region that does not answer does not match yet
                    reports[region] = RegionReport(region, differences=[f"{region}: unreachable: {exc}"])
            if all(reports[r].matches for r in regions) or time.monotonic() > deadline:
                return reports
            time.sleep(interval)
    finally:
        for sink in sinks.values():
            sink.close()
