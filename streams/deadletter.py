"""Dead letters: poison input becomes data, never a crash loop.

A dead-letter record keeps the original bytes and coordinates next to the reason, so nothing is
lost: an operator can fix the producer and re-drive the original record. Every stage of regionsync
(change agent, region indexers, dialog worker) writes this same shape to ``Settings.dlq_topic``.
"""

from __future__ import annotations

import base64
import time
from dataclasses import dataclass
from typing import Any

import orjson


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
        return orjson.dumps(
            {
                "stage": self.stage,
                "reason": self.reason,
                "detail": self.detail,
                "topic": self.topic,
                "partition": self.partition,
                "offset": self.offset,
                "key_b64": None if self.key is None else base64.b64encode(self.key).decode(),
                "value_b64": None if self.value is None else base64.b64encode(self.value).decode(),
                "ts_ms": self.ts_ms or int(time.time() * 1000),
            }
        )

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
