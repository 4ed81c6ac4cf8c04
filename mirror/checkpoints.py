"""Where a replicator is: its source positions, kept in the target region's own database.

Written after the target broker acknowledged every copy of a batch, in one transaction, so a
replicator killed at any moment starts again from a position whose records are all in the
target (it copies the tail of the last batch a second time; nothing is skipped). The rows also
carry what the replicator last saw of the source (its end offsets and when it answered), which
the region service reads to judge a promotion and which the ``mirrored`` acknowledgement mode
waits on (serve/acks.py). MirrorMaker 2 keeps the same facts in the target's Connect offsets
topic; a table in the target region's Postgres is as durable and lets a promotion read the
positions in the same transaction as the dialog store's (dialog/fence.py).
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import psycopg

SCHEMA = """
CREATE TABLE IF NOT EXISTS mirror_checkpoints (
    source_region text NOT NULL,
    topic         text NOT NULL,      -- the topic's name in the source region
    partition     int NOT NULL,
    next_offset   bigint NOT NULL,    -- first source offset not yet copied
    source_end    bigint NOT NULL,    -- the source's end as last seen (>= next_offset when behind)
    fresh_ms      bigint NOT NULL,    -- source time up to which this partition is complete in the target
    seen_ms       bigint NOT NULL,    -- when the source last answered the replicator
    PRIMARY KEY (source_region, topic, partition)
);
CREATE TABLE IF NOT EXISTS mirror_control (
    source_region text PRIMARY KEY,
    paused        boolean NOT NULL,
    reason        text NOT NULL DEFAULT '',
    changed_at    timestamptz NOT NULL DEFAULT now()
);
"""

TP = tuple[str, int]  # (topic, partition), topic named as in the source region


@dataclass(frozen=True)
class Checkpoint:
    next_offset: int
    source_end: int
    fresh_ms: int
    seen_ms: int

    @property
    def lag(self) -> int:
        return max(0, self.source_end - self.next_offset)


def ensure_schema(conn: psycopg.Connection[Any]) -> None:
    with conn.transaction():
        # Services and replicators start together: serialise the CREATEs (Postgres' type-name race).
        conn.execute("SELECT pg_advisory_xact_lock(hashtext('regionsync_mirror_schema'))")
        conn.execute(SCHEMA)


class CheckpointStore:
    """The checkpoints of the replicator from ``source_region`` into this database's region."""

    def __init__(self, dsn: str, source_region: str) -> None:
        self._dsn = dsn
        self.source_region = source_region
        self._conn: psycopg.Connection[Any] = psycopg.connect(dsn, autocommit=True, connect_timeout=10)
        ensure_schema(self._conn)

    @property
    def _live(self) -> psycopg.Connection[Any]:
        if self._conn.closed or self._conn.broken:
            self._conn = psycopg.connect(self._dsn, autocommit=True, connect_timeout=10)
        return self._conn

    def load(self) -> dict[TP, Checkpoint]:
        rows = self._live.execute(
            "SELECT topic, partition, next_offset, source_end, fresh_ms, seen_ms FROM mirror_checkpoints "
            "WHERE source_region = %s", (self.source_region,),
        ).fetchall()
        return {(str(t), int(p)): Checkpoint(int(o), int(e), int(f), int(s)) for t, p, o, e, f, s in rows}

    def save(self, points: Mapping[TP, Checkpoint]) -> None:
        """Upsert every given partition's checkpoint in one transaction. A position never moves
        backwards here (a stale writer, e.g. a replicator thawed after its successor took over,
        cannot undo the newer one's progress)."""
        if not points:
            return
        conn = self._live
        with conn.transaction(), conn.cursor() as cur:
            cur.executemany(
                "INSERT INTO mirror_checkpoints (source_region, topic, partition, next_offset, source_end, fresh_ms, "
                "seen_ms) VALUES (%s, %s, %s, %s, %s, %s, %s) ON CONFLICT (source_region, topic, partition) DO UPDATE "
                "SET next_offset = GREATEST(mirror_checkpoints.next_offset, EXCLUDED.next_offset), "
                "source_end = EXCLUDED.source_end, fresh_ms = GREATEST(mirror_checkpoints.fresh_ms, EXCLUDED.fresh_ms), "
                "seen_ms = GREATEST(mirror_checkpoints.seen_ms, EXCLUDED.seen_ms)",
                [(self.source_region, t, p, c.next_offset, c.source_end, c.fresh_ms, c.seen_ms)
                 for (t, p), c in sorted(points.items())],
            )

    def paused(self) -> tuple[bool, str]:
        row = self._live.execute(
            "SELECT paused, reason FROM mirror_control WHERE source_region = %s", (self.source_region,)
        ).fetchone()
        return (bool(row[0]), str(row[1])) if row else (False, "")

    def close(self) -> None:
        self._conn.close()


def set_paused(dsn: str, source_region: str, paused: bool, reason: str = "") -> None:
    """Pause or resume the replicator from ``source_region`` into this database's region (it
    notices within a second; a paused replicator copies nothing and keeps measuring its lag)."""
    with psycopg.connect(dsn, autocommit=True, connect_timeout=10) as conn:
        ensure_schema(conn)
        conn.execute(
            "INSERT INTO mirror_control (source_region, paused, reason) VALUES (%s, %s, %s) "
            "ON CONFLICT (source_region) DO UPDATE SET paused = EXCLUDED.paused, reason = EXCLUDED.reason, "
            "changed_at = now()", (source_region, paused, reason),
        )


def read_all(dsn: str) -> dict[str, dict[TP, Checkpoint]]:
    """Every replicator's checkpoints in this database, by source region (empty if none ran yet)."""
    with psycopg.connect(dsn, autocommit=True, connect_timeout=10) as conn:
        ensure_schema(conn)
        rows = conn.execute(
            "SELECT source_region, topic, partition, next_offset, source_end, fresh_ms, seen_ms FROM mirror_checkpoints"
        ).fetchall()
    out: dict[str, dict[TP, Checkpoint]] = {}
    for src, t, p, o, e, f, s in rows:
        out.setdefault(str(src), {})[(str(t), int(p))] = Checkpoint(int(o), int(e), int(f), int(s))
    return out


def now_ms() -> int:
    return int(time.time() * 1000)
