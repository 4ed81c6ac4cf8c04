"""Dead letters: poison input becomes data, never a crash loop.

A dead-letter record keeps the original bytes and coordinates next to the reason, so nothing is
lost: an operator can fix the producer and re-drive the original record. An original larger than
:data:`MAX_KEPT_BYTES` (the storm's 10 MB document) is kept in part: its first
:data:`PREFIX_BYTES`, its size and its SHA-256, and the whole of it stays readable at its
coordinates. Before, such a dead letter was itself too large for the topic: the change agent
retried its batch forever and the whole pipeline stalled behind one poison record. Every stage of regionsync
(change agent, region indexers, dialog worker) writes this same shape to ``Settings.dlq_topic``.
"""

from __future__ import annotations

import base64
import hashlib
import time
from dataclasses import dataclass
from typing import Any

import orjson

MAX_KEPT_BYTES = 256 * 1024  # base64 makes it ~342 KB: well under a topic's 1 MB message limit
PREFIX_BYTES = 64 * 1024


def _kept(raw: bytes | None) -> tuple[str | None, dict[str, Any] | None]:
    """The base64 of ``raw`` (or of its prefix, when too large), and what was left out."""
    if raw is None:
        return None, None
    if len(raw) <= MAX_KEPT_BYTES:
        return base64.b64encode(raw).decode(), None
    cut = {"bytes": len(raw), "kept_bytes": PREFIX_BYTES, "sha256": hashlib.sha256(raw).hexdigest()}
    return base64.b64encode(raw[:PREFIX_BYTES]).decode(), cut


@dataclass(frozen=True)
class DeadLetter:
    stage: str  # which component gave up: "changes", "indexer:<region>", "dialog"
    reason: str  # machine-readable: unparseable_json, invalid_utf8, wrong_envelope, missing_key, ...
    detail: str  # human-readable explanation
    topic: str
    partition: int
    offset: int
    key: bytes | None
    value: bytes | None
    ts_ms: int = 0

    def to_bytes(self) -> bytes:
        key_b64, key_cut = _kept(self.key)
        value_b64, value_cut = _kept(self.value)
        data: dict[str, Any] = {
            "stage": self.stage,
            "reason": self.reason,
            "detail": self.detail,
            "topic": self.topic,
            "partition": self.partition,
            "offset": self.offset,
            "key_b64": key_b64,
            "value_b64": value_b64,
            "ts_ms": self.ts_ms or int(time.time() * 1000),
        }
        if key_cut:
            data["key_truncated"] = key_cut
        if value_cut:
            data["value_truncated"] = value_cut
        return orjson.dumps(data)

    def headers(self) -> list[tuple[str, str | bytes | None]]:
        return [("regionsync.reason", self.reason.encode()), ("regionsync.stage", self.stage.encode())]

    @classmethod
    def from_bytes(cls, raw: bytes) -> DeadLetter:
        data: dict[str, Any] = orjson.loads(raw)
        return cls(
            stage=data["stage"],
            reason=data["reason"],
            detail=data["detail"],
            topic=data["topic"],
            partition=int(data["partition"]),
            offset=int(data["offset"]),
            key=None if data.get("key_b64") is None else base64.b64decode(data["key_b64"]),
            value=None if data.get("value_b64") is None else base64.b64decode(data["value_b64"]),
            ts_ms=int(data.get("ts_ms") or 0),
        )
