"""Debezium's incremental snapshot, asked for through its signal table (the ``source`` channel).

Why the signal table and not the Kafka signal channel: Debezium's Postgres connector writes the
incremental snapshot's watermarks into the signal table whichever channel carries the request,
so the table is needed anyway; the Kafka channel adds a consumer inside the connector that
relies on a signal topic surviving, which the embedded broker (in memory) does not promise.
The signal is a row inserted into ``Settings.signal_table`` (connector setting
``signal.data.collection``); Debezium reads it from the WAL and emits the chosen rows as ``op=r``
events at the current WAL position while streaming goes on.
"""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from typing import Any

import orjson
import psycopg
from psycopg import sql

from regionsync.settings import Settings

# Ids per signal: the condition is a SQL IN list inside the signal's JSON; kept well under what
# one snapshot chunk (Debezium's default incremental.snapshot.chunk.size 1024) reads at once.
IDS_PER_SIGNAL = 500


def snapshot_signal(table: str, key_column: str, ids: Sequence[str]) -> dict[str, Any]:
    """The ``execute-snapshot`` signal's data for ``ids`` of ``table`` (pure)."""
    quoted = ", ".join("'" + doc_id.replace("'", "''") + "'" for doc_id in ids)
    column = '"' + key_column.replace('"', '""') + '"'
    return {
        "type": "incremental",
        "data-collections": [table],
        "additional-conditions": [{"data-collection": table, "filter": f"{column}::text IN ({quoted})"}],
    }


def request_snapshot(settings: Settings, ids: Sequence[str]) -> list[str]:
    """Insert one signal per batch of ids; return the signal ids. Raises psycopg errors as they are."""
    signal_ids: list[str] = []
    if not ids:
        return signal_ids
    table = sql.Identifier(*settings.signal_table.split("."))
    with psycopg.connect(settings.pg_dsn(), autocommit=True) as conn:
        for start in range(0, len(ids), IDS_PER_SIGNAL):
            batch = list(ids[start : start + IDS_PER_SIGNAL])
            signal_id = f"regionsync-reconcile-{uuid.uuid4()}"
            data = orjson.dumps(snapshot_signal(settings.capture_table, settings.key_column, batch)).decode()
            conn.execute(
                sql.SQL("INSERT INTO {} (id, type, data) VALUES (%s, %s, %s)").format(table),
                (signal_id, "execute-snapshot", data),
            )
            signal_ids.append(signal_id)
    return signal_ids
