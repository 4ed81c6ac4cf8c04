"""Which columns of a captured row are the embedded text and which are metadata.

This is configuration (``Settings.text_columns`` and friends), shared by the Debezium and the CMS
parsers so both origins turn a row into the same :class:`~streams.events.DocumentChange`.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from regionsync.settings import PLACEHOLDER, Settings
from streams.errors import PoisonEvent
from streams.events import (
    MAX_DOC_ID_BYTES,
    MAX_STATUS_BYTES,
    MAX_TAG_BYTES,
    MAX_TAGS,
    MAX_TITLE_BYTES,
    ChangeKind,
    DocumentChange,
    SourceRef,
    clip_utf8,
    content_hash,
    utf8_len,
)


@dataclass(frozen=True)
class CaptureSpec:
    key_column: str = "id"
    title_column: str = "title"
    text_columns: tuple[str, ...] = ("body",)
    tags_column: str = "tags"
    status_column: str = "status"
    metadata_columns: tuple[str, ...] = ("tags", "status", "updated_at")
    published_values: tuple[str, ...] = ("published",)
    max_document_bytes: int = 200_000

    @classmethod
    def from_settings(cls, settings: Settings) -> CaptureSpec:
        return cls(
            key_column=settings.key_column,
            title_column=settings.title_column,
            text_columns=tuple(settings.text_columns),
            tags_column=settings.tags_column,
            status_column=settings.status_column,
            metadata_columns=tuple(settings.metadata_columns),
            published_values=tuple(settings.published_values),
            max_document_bytes=settings.max_document_bytes,
        )

    def text_of(self, row: Mapping[str, Any]) -> str | None:
        """The embedded text of ``row`` (text columns joined), or None when a column holds a TOAST
        placeholder: Postgres did not send an unchanged TOASTed value, the text is unknown, and
        the placeholder itself must never be embedded."""
        parts: list[str] = []
        for column in self.text_columns:
            value = row.get(column)
            if value == PLACEHOLDER:
                return None
            if value is None:
                continue
            if not isinstance(value, str):
                raise PoisonEvent("bad_field", f"text column {column!r} is {type(value).__name__}, not a string")
            if value:
                parts.append(value)
        return "\n\n".join(parts)

    def previous_hash(self, before: Any) -> str | None:
        """content_hash of the old row's text, when the source sent a complete old row of a
        published document (an unpublished one is in no region: its text is not "held")."""
        if not isinstance(before, Mapping) or not all(c in before for c in self.text_columns):
            return None
        if self.status_column in before and before[self.status_column] not in self.published_values:
            return None
        try:
            text = self.text_of(before)
        except PoisonEvent:
            return None  # an odd old row only costs us the shortcut, never the change itself
        return None if text is None else content_hash(text)

    def change_from_row(
        self, doc_id: str, version: int, row: Mapping[str, Any], source: SourceRef, before: Any = None
    ) -> DocumentChange:
        """A row that exists after the change: an upsert if published, else a removal.
        ``before`` is the old row when the source sent one (Debezium under REPLICA IDENTITY FULL).
        Raises :class:`PoisonEvent` for a row no region could hold (streams/events.py's limits)."""
        check_doc_id(doc_id)
        status = _as_text(row.get(self.status_column, self.published_values[0] if self.published_values else ""))
        if status == PLACEHOLDER:
            # A TOASTed status cannot happen with a short status column; if it does, the
            # row's status is unknown and removing it would be a guess: keep it indexed.
            status = self.published_values[0] if self.published_values else ""
        if utf8_len(status) > MAX_STATUS_BYTES:
            raise PoisonEvent("bad_field", f"status is {utf8_len(status)} bytes, more than {MAX_STATUS_BYTES}")
        title = clip_utf8(_as_text(row.get(self.title_column, "")), MAX_TITLE_BYTES)
        tags = _as_tags(row.get(self.tags_column))
        if len(tags) > MAX_TAGS or any(utf8_len(t) > MAX_TAG_BYTES for t in tags):
            raise PoisonEvent("tags_too_large", f"{len(tags)} tags (at most {MAX_TAGS}, each at most {MAX_TAG_BYTES} bytes)")
        metadata = {c: row.get(c) for c in self.metadata_columns if c in row and row.get(c) != PLACEHOLDER}
        if status not in self.published_values:
            return DocumentChange(doc_id, version, ChangeKind.DELETE, source, title=title, tags=tags,
                                  status=status, metadata=metadata)
        text = self.text_of(row)
        if title == PLACEHOLDER:
            title = ""
        if text is not None and len(text.encode("utf-8")) > self.max_document_bytes:
            raise PoisonEvent(
                "document_too_large",
                f"{len(text.encode('utf-8'))} bytes of text > max_document_bytes={self.max_document_bytes}",
            )
        return DocumentChange(doc_id, version, ChangeKind.UPSERT, source, title=title, text=text, tags=tags,
                              status=status, metadata=metadata, previous_hash=self.previous_hash(before))

    def removal(self, doc_id: str, version: int | None, source: SourceRef) -> DocumentChange:
        check_doc_id(doc_id)
        return DocumentChange(doc_id, version, ChangeKind.DELETE, source)


def check_doc_id(doc_id: str) -> None:
    if not doc_id or utf8_len(doc_id) > MAX_DOC_ID_BYTES:
        raise PoisonEvent("bad_doc_id", f"a document id must be 1..{MAX_DOC_ID_BYTES} bytes of UTF-8, got {utf8_len(doc_id)}")


def _as_text(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, str):
        return value
    raise PoisonEvent("bad_field", f"expected a string, got {type(value).__name__}")


def _as_tags(value: Any) -> tuple[str, ...]:
    if value is None or value == PLACEHOLDER:
        return ()
    if isinstance(value, list | tuple):
        return tuple(str(v) for v in value if v is not None)
    if isinstance(value, str):
        return (value,)
    raise PoisonEvent("bad_field", f"tags must be a list of strings, got {type(value).__name__}")
