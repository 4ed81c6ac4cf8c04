"""Decode and check one record of the chunks topic before it reaches a region's Milvus."""

from __future__ import annotations

import logging

import orjson
from confluent_kafka import Message

from indexer.schema import record_problem
from streams.deadletter import DeadLetter
from streams.events import DocRecord, RecordOp, SourceRef

log = logging.getLogger(__name__)


def decode(msg: Message, stage: str, dim: int) -> tuple[DocRecord | None, DeadLetter | None]:
    """The record in ``msg``, or the dead letter saying why it cannot be applied (pure: the
    worker sends the letter and carries on). ``dim``: the region's vector dimension."""
    key, value = msg.key(), msg.value()
    topic, partition, offset = str(msg.topic()), int(msg.partition() or 0), int(msg.offset() or 0)

    def poison(reason: str, detail: str) -> tuple[None, DeadLetter]:
        log.warning("%s: dead-lettering %s[%d]@%d: %s: %s", stage, topic, partition, offset, reason, detail)
        return None, DeadLetter(stage, reason, detail, topic, partition, offset, key, value)

    try:
        doc_key = None if key is None else key.decode("utf-8")
    except UnicodeDecodeError:
        return poison("invalid_key", "message key is not UTF-8")
    if value is None:
        # A Kafka tombstone on the (compactable) chunks topic: the document is gone.
        if not doc_key:
            return poison("missing_key", "tombstone without a key")
        src = SourceRef(kind="kafka", topic=topic, partition=partition, offset=offset)
        return DocRecord(doc_key, None, RecordOp.DELETE, src), None
    try:
        record = DocRecord.from_bytes(value)
    except orjson.JSONDecodeError as exc:
        return poison("unparseable_json", str(exc))
    except (ValueError, KeyError, TypeError) as exc:
        reason = "wrong_schema" if "not a regionsync doc record" in str(exc) else "malformed_record"
        return poison(reason, f"{type(exc).__name__}: {exc}")
    if doc_key is not None and doc_key != record.doc_id:
        return poison("key_mismatch", f"key {doc_key!r} but doc_id {record.doc_id!r}")
    problem = record_problem(record, dim)
    if problem is not None:
        return poison(*problem)
    return record, None
