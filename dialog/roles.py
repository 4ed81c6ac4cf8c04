"""The role of a region, in its own database: the promotions it knows and the row that fences writers.

Two tables in the region's database (beside its dialog state store):

* ``regionsync_promotions``: every promotion the region knows, its own (written by its service
  when it was promoted) and the other regions' (read from their control topics by the dialog
  worker, or by the service when it rejoins). Rules in :mod:`dialog.fence`.
* ``regionsync_active_region``: one row naming the promotion of the highest ballot. A turn is
  written while holding it ``FOR SHARE`` (serve/roles.py); recording a promotion takes it
  ``FOR UPDATE``, so the role changes between two turns, never during one, and a turn that
  started before a promotion was recorded here is fenced by the promotion's cut if the new active
  region had not received it (:mod:`dialog.fence`).

No database is shared between regions: each decides from what it holds.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import orjson
import psycopg

from dialog.fence import Promotion, active

log = logging.getLogger(__name__)

SCHEMA = """
CREATE TABLE IF NOT EXISTS regionsync_promotions (
    epoch      bigint NOT NULL,
    region     text NOT NULL,
    previous   text,
    cut        text NOT NULL,
    at_ms      bigint NOT NULL,
    published  boolean NOT NULL DEFAULT false,
    PRIMARY KEY (epoch, region)
);
CREATE TABLE IF NOT EXISTS regionsync_active_region (
    singleton   boolean PRIMARY KEY DEFAULT true CHECK (singleton),
    region      text NOT NULL,
    epoch       bigint NOT NULL,
    previous    text,
    promoted_at timestamptz NOT NULL DEFAULT now()
);
"""


@dataclass(frozen=True)
class Active:
    region: str
    epoch: int  # of the highest-ballot promotion: the fencing token of its turns
    previous: str | None = None


def ensure_schema(conn: psycopg.Connection[Any], source_region: str) -> None:
    """Create the tables (call inside the caller's schema lock); the source region is active
    until a promotion."""
    conn.execute(SCHEMA)
    conn.execute(
        "INSERT INTO regionsync_active_region (region, epoch) VALUES (%s, 1) ON CONFLICT DO NOTHING", (source_region,)
    )


def _cut_json(promo: Promotion) -> str:
    return orjson.dumps({o: {str(p): n for p, n in parts.items()} for o, parts in promo.cut.items()}).decode()


def read_promotions(conn: psycopg.Connection[Any]) -> list[Promotion]:
    rows = conn.execute(
        "SELECT epoch, region, previous, cut, at_ms FROM regionsync_promotions ORDER BY epoch, region"
    ).fetchall()
    out = []
    for epoch, region, previous, cut, at_ms in rows:
        parts = {str(o): {int(p): int(n) for p, n in v.items()} for o, v in orjson.loads(cut).items()}
        out.append(Promotion(int(epoch), str(region), previous, parts, int(at_ms)))
    return out


def read_active(conn: psycopg.Connection[Any], lock: str = "") -> Active:
    row = conn.execute(f"SELECT region, epoch, previous FROM regionsync_active_region {lock}").fetchone()
    if row is None:
        raise psycopg.DataError("the active-region row is missing")
    return Active(str(row[0]), int(row[1]), row[2])


def record_promotions(cur: psycopg.Cursor[Any], promotions: Sequence[Promotion], source_region: str,
                      published: bool = True) -> Active:
    """Record ``promotions`` (known ones are left as they are) and move the active-region row to
    the highest ballot, inside the caller's transaction. Takes the row ``FOR UPDATE`` first: waits
    for a turn being written in this region. ``published``: the promotions came from the log (a
    region's own new promotion is recorded unpublished until its control record is acknowledged)."""
    cur.execute("SELECT region FROM regionsync_active_region FOR UPDATE")
    for promo in promotions:
        cur.execute(
            "INSERT INTO regionsync_promotions (epoch, region, previous, cut, at_ms, published) "
            "VALUES (%s, %s, %s, %s, %s, %s) ON CONFLICT DO NOTHING",
            (promo.epoch, promo.region, promo.previous, _cut_json(promo), promo.at_ms, published),
        )
    known = read_promotions(cur.connection)
    top = active(known, source_region)
    cur.execute(
        "UPDATE regionsync_active_region SET region = %s, epoch = %s, previous = %s, promoted_at = now() "
        "WHERE region IS DISTINCT FROM %s OR epoch IS DISTINCT FROM %s",
        (top.region, top.epoch, top.previous, top.region, top.epoch),
    )
    if cur.rowcount:
        log.info("active region: %s (epoch %d, previous %s)", top.region, top.epoch, top.previous)
    return Active(top.region, top.epoch, top.previous)


def unpublished(conn: psycopg.Connection[Any], region: str) -> list[Promotion]:
    """This region's own promotions whose control record was not acknowledged yet."""
    return [p for p in read_promotions(conn) if p.region == region and p.epoch in {
        int(r[0]) for r in conn.execute(
            "SELECT epoch FROM regionsync_promotions WHERE region = %s AND NOT published", (region,)).fetchall()
    }]


def mark_published(conn: psycopg.Connection[Any], promo: Promotion) -> None:
    conn.execute("UPDATE regionsync_promotions SET published = true WHERE epoch = %s AND region = %s",
                 (promo.epoch, promo.region))


WRITER_PREFIX = "regionsync-writer-"


def writer_name(region: str) -> str:
    """``application_name`` of a region's writer session (Postgres keeps at most 63 bytes)."""
    return f"{WRITER_PREFIX}{region}"[:63]


def fence_writers(conn: psycopg.Connection[Any], region: str) -> list[str]:
    """Terminate ``region``'s writer sessions that hold a lock on the active-region row: a turn
    that hangs (its process frozen) while a promotion is being recorded. Its turn cannot finish:
    the service checks its session right before it publishes (serve/roles.py)."""
    rows = conn.execute(
        """
        SELECT a.application_name, a.pid, pg_terminate_backend(a.pid)
        FROM pg_stat_activity a
        WHERE a.application_name = %s AND a.pid <> pg_backend_pid()
          AND a.pid IN (SELECT l.pid FROM pg_locks l
                        WHERE l.relation = 'regionsync_active_region'::regclass AND l.granted)
        """,
        (writer_name(region),),
    ).fetchall()
    return [f"{name} (pid {pid})" for name, pid, _ok in rows]
