"""Pure decisions of the change agent: which change of a batch wins, and what each region must do.

No I/O here: the vectors come in as an argument, so this module is tested with plain data.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Collection, Mapping, Sequence

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
            best[change.doc_id] = _carry_previous(current, _carry_text(current, change))
    return [best[doc_id] for doc_id in order]


def _carry_previous(earlier: DocumentChange, later: DocumentChange) -> DocumentChange:
    """What the regions held before the batch is what the batch's first change replaced: a
    later change's old row is a state no region saw (it was superseded within the batch)."""
    previous = earlier.previous_hash if earlier.kind is ChangeKind.UPSERT else None
    if later.previous_hash == previous:
        return later
    return dataclasses.replace(later, previous_hash=previous)


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


def unchanged_text(change: DocumentChange, last_emitted: str | None) -> str | None:
    """The content hash of ``change``'s text when that text is known to be the one the regions
    already hold, i.e. the change is a title/tags/status edit; else None.

    Known means: equal to the old row's text (``previous_hash``, from Debezium's before image), or
    to the text of the newest record this agent emitted for the document (``last_emitted``). A
    healed change is never "unchanged": a region asked for it because it lacks the document.
    """
    if change.kind is not ChangeKind.UPSERT or change.text is None or change.source.op == "heal":
        return None
    digest = content_hash(change.text)
    return digest if digest in (change.previous_hash, last_emitted) else None


def texts_to_embed(
    changes: Sequence[DocumentChange],
    chunker: Callable[[str], list[str]],
    unchanged: Collection[str] = (),
) -> dict[str, list[str]]:
    """The chunk texts of every change whose text is known and must be (re)indexed; documents
    in ``unchanged`` (their text is the one the regions hold) need none."""
    out: dict[str, list[str]] = {}
    for change in changes:
        if change.kind is ChangeKind.UPSERT and change.text is not None and change.doc_id not in unchanged:
            out[change.doc_id] = chunker(change.text)
    return out


def to_record(
    change: DocumentChange,
    chunk_texts: Sequence[str] | None,
    vectors: Mapping[str, np.ndarray],
    embedded: int,
    now_ms: int,
    unchanged_hash: str | None = None,
) -> DocRecord:
    """The record every region applies for ``change``.

    ``vectors`` maps chunk text -> vector; ``embedded`` is how many of this document's vectors
    were computed now rather than found in the cache (0 for a metadata-only change).
    ``unchanged_hash`` (see :func:`unchanged_text`) makes it a metadata record carrying that hash.
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
    if unchanged_hash is not None:
        # Same text as the region holds: it re-labels its own chunks (their vectors stay as they
        # are) if its stored hash is this one, and asks for the whole document otherwise.
        return DocRecord(op=RecordOp.META, content_hash=unchanged_hash, **common)  # type: ignore[arg-type]
    assert chunk_texts is not None
    chunks = tuple(Chunk(i, text, vectors[text]) for i, text in enumerate(chunk_texts))
    return DocRecord(
        op=RecordOp.UPSERT,
        content_hash=content_hash(change.text),
        chunks=chunks,
        embedded=embedded,
        **common,  # type: ignore[arg-type]
    )
