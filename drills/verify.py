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
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np
import psycopg
from tenacity import Retrying, retry_if_exception_type, stop_after_attempt, wait_fixed

from embedding.vectors import vectors_close
from regionsync.kafka import EndsUnknown, ReadTimeout, read_topic
from regionsync.settings import Settings
from streams import cms, debezium
from streams.capture import CaptureSpec
from streams.chunking import chunk_text
from streams.errors import PoisonEvent
from streams.events import ChangeKind, DocumentChange, content_hash

if TYPE_CHECKING:
    from indexer.ports import IndexReader


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


READ_TIMEOUT_S = 180.0  # a reference read of a source topic (below)


def newest_events(
    settings: Settings, topic: str, parse: Callable[..., DocumentChange]
) -> dict[str, tuple[DocumentChange, Any]]:
    """Newest change per document on a source topic, with the message it came from (so a
    reconcile can publish that very event again). Poison is skipped: it is in the dead-letter topic."""
    spec = CaptureSpec.from_settings(settings)
    newest: dict[str, tuple[DocumentChange, Any]] = {}
    # Generous: tansu reads one object per batch, and a loaded machine has taken over 60 s for a
    # CMS topic of a few thousand small batches (the fault suite's end checks).
    for msg in read_topic(settings, topic, timeout=READ_TIMEOUT_S):
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
    sink: IndexReader | None = None,
    attempts: int = 3,
) -> RegionReport:
    """Compare one region with ``expected``. A region that does not answer is retried a few times
    (a busy Milvus server can refuse a connection under load) before the error propagates."""
    from indexer.errors import RegionUnavailable
    from indexer.milvus_reader import MilvusIndexReader

    own = sink is None
    sink = sink or MilvusIndexReader.for_region(settings, region)
    try:
        retrying = Retrying(stop=stop_after_attempt(attempts), wait=wait_fixed(1.0), reraise=True,
                            retry=retry_if_exception_type(RegionUnavailable))
        rows = retrying(sink.dump_chunks)
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
    from indexer.milvus_reader import MilvusIndexReader

    regions = list(regions or settings.regions)
    deadline = time.monotonic() + timeout
    sinks = {region: MilvusIndexReader.for_region(settings, region) for region in regions}
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
