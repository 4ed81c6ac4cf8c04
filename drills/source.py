"""The source of truth, read once per reconcile: the captured table and the CMS producers' topic."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import psycopg
from psycopg import sql

from drills.diff import SourceView
from drills.verify import expected_state, newest_events
from regionsync.settings import Settings
from streams import cms
from streams.capture import CaptureSpec
from streams.events import ChangeKind


@dataclass(frozen=True)
class SourceSnapshot:
    view: SourceView
    cms_messages: dict[str, Any]  # doc id -> the newest CMS event's Kafka message (to publish it again)


def read_source(settings: Settings) -> SourceSnapshot:
    newest = newest_events(settings, settings.cms_topic, cms.parse)
    changes = {doc_id: change for doc_id, (change, _msg) in newest.items()}
    expected = expected_state(settings, cms_newest=changes)
    cms_versions = {
        doc_id: (int(change.version or 0), change.source.op or ("delete" if change.kind is ChangeKind.DELETE else "upsert"))
        for doc_id, change in changes.items()
    }
    return SourceSnapshot(
        SourceView(expected, table_status(settings), cms_versions),
        {doc_id: msg for doc_id, (_change, msg) in newest.items()},
    )


def table_status(settings: Settings) -> dict[str, str]:
    """Every row of the captured table: id -> status (published or not)."""
    spec = CaptureSpec.from_settings(settings)
    query = sql.SQL("SELECT {key}::text, {status}::text FROM {table}").format(
        key=sql.Identifier(spec.key_column),
        status=sql.Identifier(spec.status_column),
        table=sql.Identifier(*settings.capture_table.split(".")),
    )
    with psycopg.connect(settings.pg_dsn()) as conn:
        return {str(k): str(s or "") for k, s in conn.execute(query).fetchall()}
