"""Re-read rows of the captured table through the change agent: heal requests at a WAL position.

Why not Debezium's incremental snapshot (the ``execute-snapshot`` signal): it works here (the
signal table channel on tansu re-emitted the rows), but the Postgres connector sends incremental
snapshot reads with ``source.lsn = null``, and a document's version in this pipeline is its WAL
position: the agent dead-letters such events (``wrong_envelope``), and no position can be given
to them afterwards that is known to order them right against concurrent changes.

The agent already has the path: a heal request makes it read the row by key and publish the
row's whole state (text and vectors, never a metadata-only record) at the version the request
names; an unpublished row becomes a removal. The version given here is Postgres's current WAL
insert position, taken before the agent reads the row, so it is above every version a region
holds (committed changes only) and a change committed after it keeps a higher position and wins.
What it cannot order: a transaction that wrote the row before that position and commits after
the agent's read; its update is then held back until the document's next change, and the next
reconcile reports it as stale and repairs it.
"""

from __future__ import annotations

import time
from collections.abc import Sequence

import psycopg
from confluent_kafka import Producer

from drills.errors import DrillsError
from regionsync.settings import Settings
from streams.heal import HealRequest

REQUESTER = "reconcile"  # the heal request's "region": who asked


def current_wal_position(settings: Settings) -> int:
    with psycopg.connect(settings.pg_dsn()) as conn:
        row = conn.execute("SELECT (pg_current_wal_insert_lsn() - '0/0'::pg_lsn)::bigint").fetchone()
    assert row is not None
    return int(row[0])


def heal_requests(doc_ids: Sequence[str], version: int, now_ms: int) -> list[HealRequest]:
    """One request per id (pure)."""
    return [HealRequest(doc_id, version, "debezium", REQUESTER, now_ms) for doc_id in doc_ids]


def request_reread(settings: Settings, doc_ids: Sequence[str]) -> int:
    """Publish the heal requests; return the version they carry. Raises :class:`DrillsError` if
    the broker did not acknowledge them all."""
    if not doc_ids:
        return 0
    version = current_wal_position(settings)
    producer = Producer({"bootstrap.servers": settings.kafka_bootstrap, "acks": "all", "enable.idempotence": True})
    failures: list[str] = []
    for req in heal_requests(doc_ids, version, int(time.time() * 1000)):
        producer.produce(
            settings.heal_topic, key=req.doc_id.encode("utf-8"), value=req.to_bytes(),
            headers=[("regionsync-origin", b"reconcile")],
            on_delivery=lambda err, msg: failures.append(str(err)) if err is not None else None,
        )
        producer.poll(0)
    remaining = producer.flush(30.0)
    if remaining or failures:
        raise DrillsError(f"re-read requests: {remaining} unacknowledged, {len(failures)} failed: {'; '.join(failures[:3])}")
    return version
