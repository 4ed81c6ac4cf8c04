"""Document events published by CMS systems straight to Kafka (no database to capture).

Schema (one JSON object per event, UTF-8; JSON Lines for files) — documented in docs/cms-events.md::

    {"doc_id": "faq-42", "version": 7, "op": "upsert",
     "document": {"title": "...", "body": "...", "tags": ["billing"], "status": "published"}}
    {"doc_id": "faq-42", "version": 8, "op": "delete"}

``version`` is the producer's own, strictly increasing per document (a revision number or a
microsecond timestamp): it is what orders redelivered and out-of-order events. ``document`` holds
the same columns as the captured table, so the text/metadata split is the same configuration.
The Kafka key is the doc id, so every event of a document lands in one partition, in order.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import IO, Any

import orjson

from streams.capture import CaptureSpec
from streams.debezium import decode_json
from streams.errors import PoisonEvent, StreamsError
from streams.events import MAX_DOC_ID_BYTES, MAX_TAG_BYTES, MAX_TAGS, DocumentChange, SourceRef

log = logging.getLogger(__name__)

OPS = ("upsert", "delete")
MAX_DOC_ID = MAX_DOC_ID_BYTES  # UTF-8 bytes, as a region's index counts them
MAX_VERSION = 2**63 - 1


class CmsEventError(StreamsError):
    """A CMS event does not match the schema. ``str()`` names the field and what is wrong."""


@dataclass(frozen=True)
class CmsEvent:
    doc_id: str
    version: int
    op: str
    document: Mapping[str, Any] = field(default_factory=dict)

    def to_bytes(self) -> bytes:
        data: dict[str, Any] = {"doc_id": self.doc_id, "version": self.version, "op": self.op}
        if self.op == "upsert":
            data["document"] = dict(self.document)
        return orjson.dumps(data)


def validate(data: Any, spec: CaptureSpec | None = None) -> CmsEvent:
    """Check one decoded event against the schema; raise :class:`CmsEventError` saying what is wrong."""
    spec = spec or CaptureSpec()
    if not isinstance(data, dict):
        raise CmsEventError(f"an event must be a JSON object, got {type(data).__name__}")
    unknown = set(data) - {"doc_id", "version", "op", "document"}
    if unknown:
        raise CmsEventError(f"unknown field(s): {', '.join(sorted(unknown))}")
    doc_id = data.get("doc_id")
    if not isinstance(doc_id, str) or not doc_id.strip():
        raise CmsEventError("doc_id: required, a non-empty string")
    if len(doc_id.encode("utf-8")) > MAX_DOC_ID:
        raise CmsEventError(f"doc_id: longer than {MAX_DOC_ID} bytes of UTF-8")
    version = data.get("version")
    if not isinstance(version, int) or isinstance(version, bool) or not 0 <= version <= MAX_VERSION:
        raise CmsEventError("version: required, an integer between 0 and 2^63-1, increasing per document")
    op = data.get("op")
    if op not in OPS:
        raise CmsEventError(f"op: required, one of {', '.join(OPS)} (got {op!r})")
    document = data.get("document")
    if op == "delete":
        return CmsEvent(doc_id, version, op, {})
    if not isinstance(document, dict):
        raise CmsEventError("document: required for op 'upsert', an object of column -> value")
    for column in spec.text_columns:
        if not isinstance(document.get(column), str):
            raise CmsEventError(f"document.{column}: required, a string (it is embedded text)")
    if spec.title_column in document and not isinstance(document[spec.title_column], str):
        raise CmsEventError(f"document.{spec.title_column}: must be a string")
    tags = document.get(spec.tags_column)
    if tags is not None and not (isinstance(tags, list) and all(isinstance(t, str) for t in tags)):
        raise CmsEventError(f"document.{spec.tags_column}: must be a list of strings")
    if tags is not None and (len(tags) > MAX_TAGS or any(len(t.encode("utf-8")) > MAX_TAG_BYTES for t in tags)):
        raise CmsEventError(f"document.{spec.tags_column}: at most {MAX_TAGS} tags of at most {MAX_TAG_BYTES} bytes each")
    status = document.get(spec.status_column)
    if status is not None and not isinstance(status, str):
        raise CmsEventError(f"document.{spec.status_column}: must be a string")
    return CmsEvent(doc_id, version, op, document)


def parse(
    key: bytes | None, value: bytes | None, spec: CaptureSpec, topic: str, partition: int, offset: int
) -> DocumentChange:
    """Parse a CMS event read from Kafka. Raises :class:`PoisonEvent` for anything unusable."""
    if value is None:
        if key is None:
            raise PoisonEvent("missing_key", "tombstone without a key")
        try:
            doc_id = key.decode("utf-8")
        except UnicodeDecodeError as exc:
            raise PoisonEvent("invalid_utf8", "key is not valid UTF-8") from exc
        return spec.removal(doc_id, None, SourceRef("cms", topic, partition, offset, op="tombstone"))
    data = decode_json(value, "value")
    try:
        event = validate(data, spec)
    except CmsEventError as exc:
        raise PoisonEvent("wrong_envelope", str(exc)) from exc
    if key is not None and key.decode("utf-8", "replace") != event.doc_id:
        raise PoisonEvent("key_mismatch", f"record key {key.decode('utf-8', 'replace')!r} != doc_id {event.doc_id!r}")
    ref = SourceRef("cms", topic, partition, offset, op=event.op)
    if event.op == "delete":
        return spec.removal(event.doc_id, event.version, ref)
    return spec.change_from_row(event.doc_id, event.version, event.document, ref)


def read_jsonl(stream: IO[str] | Iterable[str], spec: CaptureSpec | None = None) -> Iterator[CmsEvent]:
    """Validate every line first; raise one :class:`CmsEventError` listing each bad line (nothing is half-sent)."""
    events: list[CmsEvent] = []
    errors: list[str] = []
    for number, line in enumerate(stream, start=1):
        if not line.strip():
            continue
        try:
            events.append(validate(orjson.loads(line), spec))
        except orjson.JSONDecodeError as exc:
            errors.append(f"line {number}: not JSON ({exc})")
        except CmsEventError as exc:
            errors.append(f"line {number}: {exc}")
    if errors:
        shown = errors[:20] + ([f"... and {len(errors) - 20} more"] if len(errors) > 20 else [])
        raise CmsEventError("invalid CMS events, nothing published:\n  " + "\n  ".join(shown))
    return iter(events)
