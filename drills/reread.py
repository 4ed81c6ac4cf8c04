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

A transaction that wrote the row before that position but commits after it would lose: the agent
could read the row before the commit (the old state, published at the high version), and the
transaction's own event, carrying its lower WAL position, would then be refused by every region's
version guard, leaving the old state until the document's next change. So the requests are sent
only once every transaction in flight when the position was taken has ended (committed or
rolled back, from ``pg_current_snapshot()``'s in-progress list): whatever the agent reads then
includes every change below the position. Transactions that start later write above it and win.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Sequence

import psycopg

from drills.errors import DrillsError
from regionsync.kafka import new_producer
from regionsync.settings import Settings
from streams.heal import HealRequest

log = logging.getLogger(__name__)

REQUESTER = "reconcile"  # the heal request's "region": who asked


def wal_position_after_inflight(
    settings: Settings, timeout_s: float = 120.0, poll_s: float = 0.05, clock: Callable[[], float] = time.monotonic
) -> tuple[int, int]:
    """The current WAL insert position, returned once every transaction that was in progress
    when it was taken has ended; and how many had to be waited for. Raises :class:`DrillsError`
    if some are still running after ``timeout_s`` (a stuck transaction: nothing was sent)."""
    with psycopg.connect(settings.pg_dsn(), autocommit=True) as conn:
        row = conn.execute("SELECT (pg_current_wal_insert_lsn() - '0/0'::pg_lsn)::bigint").fetchone()
        assert row is not None
        # Taken after the position: a transaction that wrote below it and has not committed yet
        # got its id before its first write, so before the id this statement assigns to itself.
        # A snapshot's in-progress list alone is not enough: its xmax is the newest *completed*
        # id + 1, so a running transaction with an id at or above xmax is not listed (seen: the
        # only writer in flight was exactly at xmax). Every id below our own is a candidate.
        snapshot, own = conn.execute("SELECT pg_current_snapshot()::text, pg_current_xact_id()::text").fetchone() \
            or ("", "")
        xids = [str(x) for x in inflight_candidates(str(snapshot), int(own))]
        deadline = clock() + timeout_s
        waiting = list(xids)
        while waiting:
            running = conn.execute(
                "SELECT x FROM unnest(%s::xid8[]) AS x WHERE pg_xact_status(x) = 'in progress'", (waiting,)
            ).fetchall()
            waiting = [str(r[0]) for r in running]
            if not waiting:
                break
            if clock() > deadline:
                raise DrillsError(
                    f"{len(waiting)} transactions in flight at WAL position {row[0]} still running after "
                    f"{timeout_s:.0f}s (xids {', '.join(waiting[:5])}); no row was re-read"
                )
            time.sleep(poll_s)
    return int(row[0]), len(xids)


def inflight_candidates(snapshot: str, own_xid: int, limit: int = 100_000) -> list[int]:
    """Transaction ids that may have been running when ``snapshot`` ('xmin:xmax:xip,...') was
    taken by the statement that was assigned ``own_xid`` (pure): the snapshot's in-progress list
    plus every id from its xmax up to ours (assigned meanwhile, not listed). ``limit`` bounds the
    range: ids are assigned only to writers, so thousands between two statements is already odd."""
    xmin_text, xmax_text, xip_text = (snapshot.split(":") + ["", ""])[:3]
    xmax = int(xmax_text or xmin_text or own_xid)
    listed = {int(x) for x in xip_text.split(",") if x}
    return sorted(listed | set(range(max(xmax, own_xid - limit), own_xid)))


def heal_requests(doc_ids: Sequence[str], version: int, now_ms: int) -> list[HealRequest]:
    """One request per id (pure)."""
    return [HealRequest(doc_id, version, "debezium", REQUESTER, now_ms) for doc_id in doc_ids]


def request_reread(settings: Settings, doc_ids: Sequence[str]) -> int:
    """Publish the heal requests; return the version they carry. Raises :class:`DrillsError` if
    the broker did not acknowledge them all."""
    if not doc_ids:
        return 0
    version, waited = wal_position_after_inflight(settings)
    if waited:
        log.info("re-read at WAL position %d after %d transactions in flight there ended", version, waited)
    producer = new_producer(settings.kafka().producer())
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
