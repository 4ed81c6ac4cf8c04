"""Pure decisions of the change agent: which change of a batch wins, and what each region must do.

No I/O here: the vectors come in as an argument, so this module is tested with plain data.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Mapping, Sequence

import numpy as np

from streams.events import (
    ChangeKind,
    Chunk,
    DocRecord,
    DocumentChange,
    RecordOp,
    content_hash,
)


def newest_per_document(changes: Sequence[DocumentChange]) -> list[DocumentChange]:
    """Keep one change per document: the highest version; among equals, the later one.

    Intermediate versions inside one batch never need to reach a region: each record carries a
    document's whole state. A tombstone (version ``None``) wins only when the batch has nothing
    versioned for that document, because Debezium emits it right after the delete it confirms.
    Order of first appearance is kept, so output order follows input order.

    A change whose text is unknown (a TOAST placeholder: "the text did not change") never throws
    away the text of the change it follows: it is merged with it, keeping the earlier text and its
    own metadata and version. Otherwise an insert followed at once by a tags-only update would
    reach the regions as a text-less record, and a region that never saw the insert could not
    index the document at all.
    """
    best: dict[str, DocumentChange] = {}
    order: list[str] = []
    for change in changes:
        current = best.get(change.doc_id)
        if current is None:
            order.append(change.doc_id)
            best[change.doc_id] = change
        elif change.version is None:
            continue
        elif current.version is None or change.version >= current.version:
            best[change.doc_id] = _carry_text(current, change)
    return [best[doc_id] for doc_id in order]


def _carry_text(earlier: DocumentChange, later: DocumentChange) -> DocumentChange:
    """``later`` with ``earlier``'s text when ``later`` says its text is unchanged but unknown."""
    if (
        later.kind is ChangeKind.UPSERT
        and later.text is None
        and earlier.kind is ChangeKind.UPSERT
        and earlier.text is not None
    ):
        return dataclasses.replace(later, text=earlier.text)
    return later


def texts_to_embed(changes: Sequence[DocumentChange], chunker: Callable[[str], list[str]]) -> dict[str, list[str]]:
    """The chunk texts of every change whose text is known and must be (re)indexed."""
    out: dict[str, list[str]] = {}
    for change in changes:
        if change.kind is ChangeKind.UPSERT and change.text is not None:
            out[change.doc_id] = chunker(change.text)
    return out


def to_record(
    change: DocumentChange,
    chunk_texts: Sequence[str] | None,
    vectors: Mapping[str, np.ndarray],
    embedded: int,
    now_ms: int,
) -> DocRecord:
    """The record every region applies for ``change``.

    ``vectors`` maps chunk text -> vector; ``embedded`` is how many of this document's vectors
    were computed now rather than found in the cache (0 for a metadata-only change).
    """
    common = dict(
        doc_id=change.doc_id,
        version=change.version,
        source=change.source,
        title=change.title,
        tags=change.tags,
        status=change.status,
        produced_ms=now_ms,
    )
    if change.kind is ChangeKind.DELETE:
        return DocRecord(op=RecordOp.DELETE, **common)  # type: ignore[arg-type]
    if change.text is None:
        # TOAST placeholder: the text did not change (Postgres only omits unchanged values),
        # so the region keeps its chunks and vectors and takes the new metadata and version.
        return DocRecord(op=RecordOp.META, **common)  # type: ignore[arg-type]
    assert chunk_texts is not None
    chunks = tuple(Chunk(i, text, vectors[text]) for i, text in enumerate(chunk_texts))
    return DocRecord(
        op=RecordOp.UPSERT,
        content_hash=content_hash(change.text),
        chunks=chunks,
        embedded=embedded,
        **common,  # type: ignore[arg-type]
    )
