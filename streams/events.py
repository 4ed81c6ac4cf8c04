"""Event types of the knowledge pipeline.

Two kinds of record flow through regionsync's topics:

* :class:`DocumentChange`: one change to one CMS document, normalised from either a Debezium
  envelope (``streams.debezium``) or a CMS producer event (``streams.cms``). Identity: ``doc_id``;
  order: ``version`` (the WAL position for Debezium events, an explicit version for CMS events).
* :class:`DocRecord`: what the change agent hands to every region's indexer on the chunks topic,
  keyed by ``doc_id``: the whole new state of one document (all chunks, with their vectors), its
  removal, or (text unchanged) its new metadata alone, so that a title or tag change does not
  carry 384 floats per chunk across Kafka. Each record is self-contained, so applying it twice, or applying only the newest
  record of a document, gives the same index; and a region that lost everything can be rebuilt
  from the newest record per key.
"""

from __future__ import annotations

import base64
import hashlib
import uuid
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any

import numpy as np
import orjson

RECORD_SCHEMA = 1

# What one document may carry to fit every region's index (indexer/schema.py builds its
# collections with these limits). The change agent enforces them when it parses a change
# (streams/capture.py), so a document that cannot fit is dead-lettered once, by the agent, and
# verify/reconcile, which parse the source the same way, agree that no region should hold it.
# Before, the agent embedded such a document and every region's indexer dead-lettered the record,
# while the source still said the regions should hold it: drift that no repair could end.
MAX_DOC_ID_BYTES = 512
MAX_TITLE_BYTES = 4096  # a longer title is clipped, not refused: it only labels a hit
MAX_TAGS = 256
MAX_TAG_BYTES = 512
MAX_STATUS_BYTES = 128


def utf8_len(text: str) -> int:
    return len(text.encode("utf-8"))


def clip_utf8(text: str, max_bytes: int) -> str:
    """Cut ``text`` to at most ``max_bytes`` UTF-8 bytes without splitting a character."""
    raw = text.encode("utf-8")
    if len(raw) <= max_bytes:
        return text
    return raw[:max_bytes].decode("utf-8", errors="ignore")


class ChangeKind(StrEnum):
    UPSERT = "upsert"  # the document exists and is published: index this content
    DELETE = "delete"  # deleted, unpublished, or tombstoned: remove every chunk


@dataclass(frozen=True)
class SourceRef:
    """Where a change came from: enough to find the original event again."""

    kind: str  # "debezium" | "cms"
    topic: str
    partition: int
    offset: int
    lsn: int | None = None
    op: str | None = None  # Debezium op (r/c/u/d) or CMS op
    ts_ms: int | None = None  # commit time at the source, when known

    def to_dict(self) -> dict[str, Any]:
        return {
            "kind": self.kind,
            "topic": self.topic,
            "partition": self.partition,
            "offset": self.offset,
            "lsn": self.lsn,
            "op": self.op,
            "ts_ms": self.ts_ms,
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> SourceRef:
        return cls(
            kind=str(data["kind"]),
            topic=str(data["topic"]),
            partition=int(data["partition"]),
            offset=int(data["offset"]),
            lsn=None if data.get("lsn") is None else int(data["lsn"]),
            op=data.get("op"),
            ts_ms=None if data.get("ts_ms") is None else int(data["ts_ms"]),
        )


@dataclass(frozen=True)
class DocumentChange:
    """One change to one document, whatever its origin.

    ``text`` is the embedded text (the configured text columns joined); ``None`` means the text
    is not known in this event (a TOAST placeholder arrived instead): keep the indexed chunks and
    update only the metadata. ``version`` is ``None`` only for a tombstone, which removes the
    document at whatever version the region holds.
    """

    doc_id: str
    version: int | None
    kind: ChangeKind
    source: SourceRef
    title: str = ""
    text: str | None = None
    tags: tuple[str, ...] = ()
    status: str = ""
    metadata: dict[str, Any] = field(default_factory=dict, compare=False, hash=False)
    # content_hash of the text before this change, when the source sent the old row (Debezium's
    # ``before`` under REPLICA IDENTITY FULL) and its text was complete; None when unknown.
    previous_hash: str | None = None


@dataclass(frozen=True)
class Chunk:
    index: int
    text: str
    embedding: np.ndarray = field(compare=False, repr=False)

    @property
    def text_hash(self) -> str:
        return text_hash(self.text)


class RecordOp(StrEnum):
    UPSERT = "upsert"  # replace the document's chunks with ``chunks``
    DELETE = "delete"  # remove every chunk of the document
    # Keep the chunks and their vectors, update title/tags/status/version. With ``content_hash``
    # set, the text is known to be the one with that hash (a title/tags-only change): a region
    # whose stored hash differs must not re-label and asks for the whole document instead.
    # Without it the text is unknown (a TOAST placeholder).
    META = "meta"


@dataclass(frozen=True)
class DocRecord:
    """The unit every region's indexer applies. Keyed by ``doc_id`` on the chunks topic."""

    doc_id: str
    version: int | None
    op: RecordOp
    source: SourceRef
    content_hash: str | None = None
    title: str = ""
    tags: tuple[str, ...] = ()
    status: str = ""
    chunks: tuple[Chunk, ...] = ()
    embedded: int = 0  # how many chunk vectors were computed for this record (0 = all cached)
    produced_ms: int = 0

    def to_bytes(self) -> bytes:
        return orjson.dumps(
            {
                "schema": RECORD_SCHEMA,
                "doc_id": self.doc_id,
                "version": self.version,
                "op": self.op.value,
                "source": self.source.to_dict(),
                "content_hash": self.content_hash,
                "title": self.title,
                "tags": list(self.tags),
                "status": self.status,
                "chunks": [
                    {"index": c.index, "text": c.text, "embedding": encode_vector(c.embedding)}
                    for c in self.chunks
                ],
                "embedded": self.embedded,
                "produced_ms": self.produced_ms,
            }
        )

    @classmethod
    def from_bytes(cls, raw: bytes) -> DocRecord:
        """Decode; raises ``ValueError``/``KeyError``/``TypeError`` on a malformed record."""
        data = orjson.loads(raw)
        if not isinstance(data, dict) or data.get("schema") != RECORD_SCHEMA:
            raise ValueError(f"not a regionsync doc record (schema {data.get('schema') if isinstance(data, dict) else None!r})")
        return cls(
            doc_id=str(data["doc_id"]),
            version=None if data["version"] is None else int(data["version"]),
            op=RecordOp(data["op"]),
            source=SourceRef.from_dict(data["source"]),
            content_hash=data.get("content_hash"),
            title=str(data.get("title") or ""),
            tags=tuple(data.get("tags") or ()),
            status=str(data.get("status") or ""),
            chunks=tuple(
                Chunk(int(c["index"]), str(c["text"]), decode_vector(c["embedding"])) for c in data.get("chunks") or ()
            ),
            embedded=int(data.get("embedded") or 0),
            produced_ms=int(data.get("produced_ms") or 0),
        )


# ---------------------------------------------------------------------------- identities

_CHUNK_NS = uuid.UUID("6f1c1f4e-2b1a-4d0e-9a51-7d3c2f0b9e11")


def chunk_id(doc_id: str, index: int) -> str:
    """Deterministic chunk id: the same document position always maps to the same row, so a
    re-applied record overwrites instead of duplicating, and a shrinking document's stale tail is
    addressable."""
    return str(uuid.uuid5(_CHUNK_NS, f"{doc_id}\x00{index}"))


def text_hash(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def content_hash(text: str) -> str:
    """Hash of a document's embedded text; equal hashes mean no re-embedding is needed."""
    return text_hash(text)


def encode_vector(vec: np.ndarray) -> str:
    # float32 little-endian, base64: exact (JSON floats would round-trip too, at twice the size).
    return base64.b64encode(np.asarray(vec, dtype="<f4").tobytes()).decode("ascii")


def decode_vector(data: str) -> np.ndarray:
    return np.frombuffer(base64.b64decode(data), dtype="<f4").copy()
