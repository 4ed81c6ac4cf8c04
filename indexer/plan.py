"""What a batch of doc records does to one document: a pure fold, no I/O.

``plan_document(stored, records)`` starts from the region's bookkeeping row for the document and
folds the batch's records for it, in log order, into a single final effect. Applying only that
effect gives the same index as applying every record one by one, because each record is the
whole new state of its document. The rules:

* a record whose version is <= the running version is stale (a redelivery or a reordering) and
  is skipped; this is what makes the sink idempotent and keeps a document from moving backwards;
* a delete leaves a deleted marker *with its version*, so an older upsert delivered late cannot
  resurrect the document;
* a tombstone (version ``None``) deletes at whatever version is known, without raising it;
* a meta record keeps the chunks and changes title/tags/status/version: on top of an upsert in
  the same batch it rewrites that upsert's metadata; on top of stored chunks it re-labels them;
  on a document this region does not hold, or whose held text is not the one the record names
  (its ``content_hash``), it has nothing right to re-label: it is returned as ``meta_missing``
  (never guessed at), and the worker asks the change agent for the document's whole state
  (streams/heal.py).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable
from dataclasses import dataclass
from typing import NamedTuple

from streams.events import DocRecord, RecordOp


class DocState(NamedTuple):
    """A document's bookkeeping row in a region (what ``RegionSink.doc_states`` returns)."""

    version: int
    content_hash: str | None
    n_chunks: int
    deleted: bool


@dataclass(frozen=True)
class Write:
    """Replace the document's chunks with ``record.chunks`` (metadata already merged)."""

    record: DocRecord


@dataclass(frozen=True)
class Relabel:
    """Keep the stored chunks; rewrite their title/tags/status/version from ``meta``."""

    meta: DocRecord


@dataclass(frozen=True)
class Remove:
    """Delete every chunk; keep a deleted marker at ``version`` (None: nothing known, no marker)."""

    version: int | None
    record: DocRecord


Effect = Write | Relabel | Remove


@dataclass(frozen=True)
class DocPlan:
    doc_id: str
    effect: Effect | None  # None: nothing to do (everything stale, or nothing to re-label)
    stale: int  # records skipped because their version was not newer
    meta_missing: DocRecord | None  # the newest meta record that found no chunks to re-label
    # Highest chunk count any record of this batch (or the stored row) may have written: the
    # range of ids a shrink or delete must clear (see RegionSink for why this covers crashes).
    max_chunks: int


def plan_document(doc_id: str, stored: DocState | None, records: Iterable[DocRecord]) -> DocPlan:
    version = stored.version if stored else None
    deleted = stored.deleted if stored else False
    has_chunks = stored is not None and not stored.deleted
    max_chunks = stored.n_chunks if stored else 0
    stored_hash = stored.content_hash if stored else None
    effect: Effect | None = None
    stale = 0
    meta_missing: DocRecord | None = None

    for rec in records:
        if rec.op is RecordOp.UPSERT:
            max_chunks = max(max_chunks, len(rec.chunks))
        if rec.version is None:
            if rec.op is not RecordOp.DELETE:  # validated earlier; never guess a version
                stale += 1
                continue
            effect = Remove(version, rec)
            deleted, has_chunks = True, False
            continue
        if version is not None and rec.version <= version:
            stale += 1
            continue
        if rec.op is RecordOp.UPSERT:
            effect = Write(rec)
            version, deleted, has_chunks = rec.version, False, True
            meta_missing = None  # a newer whole state: nothing left to ask for
        elif rec.op is RecordOp.DELETE:
            effect = Remove(rec.version, rec)
            version, deleted, has_chunks = rec.version, True, False
            meta_missing = None
        else:  # META
            if isinstance(effect, Write):
                if _same_text(rec, effect.record.content_hash):
                    effect = Write(_relabelled(effect.record, rec))
                    version = rec.version
                else:
                    meta_missing = rec
            elif has_chunks and not deleted and _same_text(rec, stored_hash):
                effect = Relabel(rec)
                version = rec.version
            else:
                meta_missing = rec
    return DocPlan(doc_id, effect, stale, meta_missing, max_chunks)


def _same_text(meta: DocRecord, held_hash: str | None) -> bool:
    """May ``meta`` re-label chunks whose text has ``held_hash``? A meta record with unknown text
    (TOAST) says the text did not change: yes. One that names its text's hash: only if the held
    chunks have that text; otherwise the region is behind (it missed a text change) and
    re-labelling would stamp old text with a new version."""
    return meta.content_hash is None or meta.content_hash == held_hash


def _relabelled(record: DocRecord, meta: DocRecord) -> DocRecord:
    return dataclasses.replace(
        record,
        version=meta.version,
        title=meta.title,
        tags=meta.tags,
        status=meta.status,
        source=meta.source,
        content_hash=meta.content_hash or record.content_hash,
    )


def group_by_document(records: Iterable[DocRecord]) -> dict[str, list[DocRecord]]:
    """Group a batch by document, keeping log order within each document."""
    out: dict[str, list[DocRecord]] = {}
    for rec in records:
        out.setdefault(rec.doc_id, []).append(rec)
    return out
