"""Debezium Postgres change events -> :class:`~streams.events.DocumentChange`.

Handles the envelope with and without the JsonConverter ``schema``/``payload`` wrapper, op
``r`` (snapshot), ``c``, ``u``, ``d`` and the tombstone (value ``None``) Debezium emits after a
delete. The document's version is the change's WAL position (``source.lsn``): it grows with
every committed change, so it orders redelivered and out-of-order events per document.
"""

from __future__ import annotations

from typing import Any

import orjson

from regionsync.settings import PLACEHOLDER
from streams.capture import CaptureSpec
from streams.errors import PoisonEvent
from streams.events import DocumentChange, SourceRef

UPSERT_OPS = {"r", "c", "u"}


def decode_json(raw: bytes, what: str) -> Any:
    try:
        raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise PoisonEvent("invalid_utf8", f"{what} is not valid UTF-8 ({exc.reason} at byte {exc.start})") from exc
    try:
        return orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        raise PoisonEvent("unparseable_json", f"{what}: {exc}") from exc


def _unwrap(data: Any) -> Any:
    # JsonConverter with schemas.enable=true wraps everything as {"schema": ..., "payload": ...}.
    if isinstance(data, dict) and "payload" in data and "schema" in data:
        return data["payload"]
    return data


def doc_id_from_key(key: bytes | None, spec: CaptureSpec) -> str | None:
    if key is None:
        return None
    data = _unwrap(decode_json(key, "key"))
    if isinstance(data, dict):
        value = data.get(spec.key_column)
        return None if value is None else str(value)
    if isinstance(data, str | int):
        return str(data)
    return None


def parse(
    key: bytes | None,
    value: bytes | None,
    spec: CaptureSpec,
    topic: str,
    partition: int,
    offset: int,
) -> DocumentChange:
    """Parse one Debezium record. Raises :class:`PoisonEvent` for anything unusable."""
    doc_id = doc_id_from_key(key, spec)
    if value is None:
        # Tombstone: only a key. It follows the delete event; on a compacted topic it may be
        # all that is left of the document.
        if doc_id is None:
            raise PoisonEvent("missing_key", "tombstone without a document key")
        return spec.removal(doc_id, None, SourceRef("debezium", topic, partition, offset, op="tombstone"))

    env = _unwrap(decode_json(value, "value"))
    if not isinstance(env, dict):
        raise PoisonEvent("wrong_envelope", f"expected a Debezium envelope object, got {type(env).__name__}")
    op = env.get("op")
    source = env.get("source")
    if op not in UPSERT_OPS | {"d"} or not isinstance(source, dict):
        raise PoisonEvent("wrong_envelope", f"not a Debezium change event (op={op!r}, source={'present' if isinstance(source, dict) else 'missing'})")
    lsn = source.get("lsn")
    if not isinstance(lsn, int) or isinstance(lsn, bool):
        raise PoisonEvent("wrong_envelope", f"source.lsn must be an integer, got {lsn!r}")
    ts_ms = source.get("ts_ms") if isinstance(source.get("ts_ms"), int) else env.get("ts_ms")
    ref = SourceRef("debezium", topic, partition, offset, lsn=lsn, op=op, ts_ms=ts_ms if isinstance(ts_ms, int) else None)

    row = env.get("after") if op in UPSERT_OPS else env.get("before")
    if doc_id is None and isinstance(row, dict) and row.get(spec.key_column) is not None:
        doc_id = str(row[spec.key_column])
    if doc_id is None:
        raise PoisonEvent("missing_key", f"no {spec.key_column!r} in the record key or row")
    if op == "d":
        return spec.removal(doc_id, lsn, ref)
    if not isinstance(row, dict):
        raise PoisonEvent("wrong_envelope", f"op {op!r} without an 'after' row")
    before = env.get("before") if op == "u" else None
    return spec.change_from_row(doc_id, lsn, unchanged_from_before(row, before), ref, before=before)


def unchanged_from_before(after: dict[str, Any], before: Any) -> dict[str, Any]:
    """The new row with each TOAST placeholder replaced by the old row's value of that column.

    Postgres sends an unchanged TOASTed value as "unchanged" (Debezium: the placeholder) only
    when the UPDATE left that column as it was, so the old value *is* the new one. Under REPLICA
    IDENTITY FULL the old row is logged flattened, TOASTed values included, so the text is known
    without a query per event (Debezium's reselect post-processor would otherwise run one; the
    bench's title/tags row spent its time there). Under DEFAULT there is no old row and the
    placeholder stays: the reselector, the agent's merge and the heal path take over."""
    if not isinstance(before, dict):
        return after
    filled = {
        column: before[column]
        for column, value in after.items()
        if value == PLACEHOLDER and column in before and before[column] != PLACEHOLDER
    }
    return {**after, **filled} if filled else after
