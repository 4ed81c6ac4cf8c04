"""A region's state store in Postgres: the contract of :mod:`dialog.store` (states and positions in
one transaction, compare-and-set on positions) in the region's own database."""

from __future__ import annotations

import logging
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import fields
from typing import Any

import orjson
import psycopg

from dialog import roles
from dialog.errors import OffsetConflict, PromotionsChanged
from dialog.fence import Promotion
from dialog.keys import SCHEMA as KEYS_SCHEMA
from dialog.keys import PostgresKeyRing, erase_in
from dialog.state import SessionState
from dialog.store import TP, FencedEvent, Origin, Stats
from regionsync.pgdb import region_dsn
from regionsync.settings import Settings

log = logging.getLogger(__name__)

SCHEMA = """
CREATE TABLE IF NOT EXISTS dialog_sessions (
    session_id  text PRIMARY KEY,
    status      text NOT NULL,
    last_seq    bigint NOT NULL,
    -- JSON as text: jsonb's parsing doubled the cost of a commit (measured: 39 vs 83 ms per
    -- 1,400 states); cast with state::jsonb for ad-hoc queries.
    state       text NOT NULL,
    updated_at  timestamptz NOT NULL DEFAULT now()
);
CREATE TABLE IF NOT EXISTS dialog_offsets (
    topic       text NOT NULL,
    partition   int NOT NULL,
    next_offset bigint NOT NULL,
    PRIMARY KEY (topic, partition)
);
-- Per origin region and partition of its dialog topic: the next source offset consumed (fenced
-- records included: a promotion's cut and "caught up to the cut" are measured on it) and the next
-- after the newest event folded (what a later promotion's cut may find this store tainted by).
CREATE TABLE IF NOT EXISTS dialog_sources (
    origin      text NOT NULL,
    partition   int NOT NULL,
    next_source bigint NOT NULL,
    next_folded bigint NOT NULL DEFAULT 0,
    PRIMARY KEY (origin, partition)
);
CREATE TABLE IF NOT EXISTS dialog_stats (
    topic        text PRIMARY KEY,
    applied      bigint NOT NULL DEFAULT 0,
    duplicates   bigint NOT NULL DEFAULT 0,
    conflicts    bigint NOT NULL DEFAULT 0,
    late         bigint NOT NULL DEFAULT 0,
    gaps         bigint NOT NULL DEFAULT 0,
    dead_letters bigint NOT NULL DEFAULT 0
);
ALTER TABLE dialog_stats ADD COLUMN IF NOT EXISTS fenced bigint NOT NULL DEFAULT 0;
ALTER TABLE dialog_stats ADD COLUMN IF NOT EXISTS erased bigint NOT NULL DEFAULT 0;
ALTER TABLE dialog_stats ADD COLUMN IF NOT EXISTS unopened bigint NOT NULL DEFAULT 0;
CREATE TABLE IF NOT EXISTS dialog_fenced (
    origin        text NOT NULL,
    partition     int NOT NULL,
    source_offset bigint NOT NULL,
    session_id    text NOT NULL,
    seq           bigint NOT NULL,
    event_id      text NOT NULL,
    epoch         bigint NOT NULL,
    fenced_epoch  bigint NOT NULL,
    fenced_region text NOT NULL,
    event         bytea NOT NULL,
    found_at      timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (origin, partition, source_offset)
);
"""

_STAT_COLUMNS = [f.name for f in fields(Stats)]


def ensure_schema(conn: psycopg.Connection[Any], source_region: str) -> None:
    """Create the store's and the role's tables in a region's database (idempotent)."""
    with conn.transaction():
        # Workers and services of a region start together: serialise the CREATEs (Postgres'
        # CREATE TABLE IF NOT EXISTS races on the type name).
        conn.execute("SELECT pg_advisory_xact_lock(hashtext('regionsync_dialog_schema'))")
        conn.execute(SCHEMA)
        conn.execute(KEYS_SCHEMA)
        roles.ensure_schema(conn, source_region)


def _dumps(state: SessionState) -> str:
    return state.to_json().decode()


class PostgresStore:
    """A region's state store in Postgres (the region's own database, :mod:`regionsync.pgdb`).
    A connection the server dropped (a restart, a failover) is replaced at the next call: the call
    that saw it fail raised (the worker then reloads from the store, the service answers 503), the
    ones after work again."""

    def __init__(self, dsn: str, topic: str, source_region: str, region: str = "", fence_after_s: float = 0.5) -> None:
        self.topic = topic
        self.source_region = source_region
        self.region = region
        self._fence_after_ms = int(fence_after_s * 1000)
        self._dsn = dsn
        self._conn = psycopg.connect(dsn, autocommit=True, connect_timeout=10)
        ensure_schema(self._conn, source_region)
        self.keyring = PostgresKeyRing(dsn, ensure=False)

    @property
    def _live(self) -> psycopg.Connection[Any]:
        if self._conn.closed or self._conn.broken:
            self._conn = psycopg.connect(self._dsn, autocommit=True, connect_timeout=10)
        return self._conn

    @property
    def dsn(self) -> str:
        return self._dsn

    @classmethod
    def for_region(cls, settings: Settings, region: str) -> PostgresStore:
        return cls(region_dsn(settings, region), settings.dialog_topic, settings.source_region, region,
                   settings.promote_fence_after_s)

    def get(self, session_id: str) -> SessionState | None:
        row = self._live.execute("SELECT state FROM dialog_sessions WHERE session_id = %s", (session_id,)).fetchone()
        return None if row is None else SessionState.from_dict(orjson.loads(row[0]))

    def all_states(self) -> list[SessionState]:
        with self._live.cursor() as cur:
            cur.execute("SELECT state FROM dialog_sessions ORDER BY session_id")
            return [SessionState.from_dict(orjson.loads(row[0])) for row in cur]

    def count(self) -> int:
        row = self._live.execute("SELECT count(*) FROM dialog_sessions").fetchone()
        return int(row[0]) if row else 0

    def offsets(self) -> dict[TP, int]:
        rows = self._live.execute("SELECT topic, partition, next_offset FROM dialog_offsets").fetchall()
        return {(str(t), int(p)): int(o) for t, p, o in rows}

    def sources(self) -> dict[Origin, int]:
        rows = self._live.execute("SELECT origin, partition, next_source FROM dialog_sources").fetchall()
        return {(str(o), int(p)): int(n) for o, p, n in rows}

    def folded(self) -> dict[Origin, int]:
        rows = self._live.execute(
            "SELECT origin, partition, next_folded FROM dialog_sources WHERE next_folded > 0").fetchall()
        return {(str(o), int(p)): int(n) for o, p, n in rows}

    def stats(self) -> Stats:
        row = self._live.execute(
            f"SELECT {', '.join(_STAT_COLUMNS)} FROM dialog_stats WHERE topic = %s", (self.topic,)
        ).fetchone()
        return Stats(*map(int, row)) if row else Stats()

    def promotions(self) -> list[Promotion]:
        return roles.read_promotions(self._live)

    def fenced(self) -> list[FencedEvent]:
        rows = self._live.execute(
            "SELECT origin, partition, source_offset, session_id, seq, event_id, epoch, fenced_epoch, fenced_region, "
            "event FROM dialog_fenced ORDER BY found_at, origin, partition, source_offset"
        ).fetchall()
        return [FencedEvent(str(o), int(p), int(so), str(sid), int(seq), str(eid), int(ep), int(fe), str(fr), bytes(ev))
                for o, p, so, sid, seq, eid, ep, fe, fr, ev in rows]

    def is_empty(self) -> bool:
        return self.count() == 0 and not self.offsets()

    def commit(
        self, states: Iterable[SessionState], offsets: Mapping[TP, int], expected: Mapping[TP, int], stats: Stats,
        *, sources: Mapping[Origin, int] | None = None, folded: Mapping[Origin, int] | None = None,
        fenced: Sequence[FencedEvent] = (), promotions: Sequence[Promotion] = (),
        known_promotions: Iterable[tuple[int, str]] | None = None, erased: Sequence[str] = (),
    ) -> None:
        rows = [(s.session_id, s.status, s.last_seq, _dumps(s)) for s in states]
        try:
            self._commit(rows, offsets, expected, stats, sources, folded, fenced, promotions, known_promotions,
                         self._fence_after_ms if promotions else 0, erased)
        except psycopg.errors.LockNotAvailable:
            # A turn of this region holds the role row and does not finish (its service hangs):
            # cut its session, then record the promotion (serve/roles.py explains the fence).
            with psycopg.connect(self._dsn, autocommit=True, connect_timeout=10) as side:
                cut = roles.fence_writers(side, self.region)
            log.warning("recording a promotion waited %d ms for a turn of this region: fenced %s",
                        self._fence_after_ms, cut)
            self._commit(rows, offsets, expected, stats, sources, folded, fenced, promotions, known_promotions, 0,
                         erased)

    def _commit(
        self, rows: list[tuple[str, str, int, str]], offsets: Mapping[TP, int], expected: Mapping[TP, int],
        stats: Stats, sources: Mapping[Origin, int] | None, folded: Mapping[Origin, int] | None,
        fenced: Sequence[FencedEvent], promotions: Sequence[Promotion],
        known_promotions: Iterable[tuple[int, str]] | None, lock_timeout_ms: int, erased: Sequence[str] = (),
    ) -> None:
        conn = self._live
        with conn.transaction(), conn.cursor() as cur:
            if promotions:
                # First: it takes the role row, waiting for a turn this region is writing (the
                # turn holds it shared), so the role changes between turns, never inside one.
                if lock_timeout_ms:
                    cur.execute(f"SET LOCAL lock_timeout = {int(lock_timeout_ms)}")
                roles.record_promotions(cur, promotions, self.source_region)
                cur.execute("SET LOCAL lock_timeout = 0")
            for (topic, p), new in offsets.items():
                old = expected.get((topic, p))
                if old is None:
                    cur.execute(
                        "INSERT INTO dialog_offsets (topic, partition, next_offset) VALUES (%s, %s, %s) "
                        "ON CONFLICT DO NOTHING",
                        (topic, p, new),
                    )
                else:
                    cur.execute(
                        "UPDATE dialog_offsets SET next_offset = %s WHERE topic = %s AND partition = %s "
                        "AND next_offset = %s",
                        (new, topic, p, old),
                    )
                if cur.rowcount != 1:
                    # Raising inside the transaction block rolls everything back.
                    raise OffsetConflict(f"{topic}[{p}]: stored position is not {old} (another worker?)")
            if sources or folded:
                keys = sorted(set(sources or {}) | set(folded or {}))
                cur.executemany(
                    "INSERT INTO dialog_sources (origin, partition, next_source, next_folded) VALUES (%s, %s, %s, %s) "
                    "ON CONFLICT (origin, partition) DO UPDATE "
                    "SET next_source = GREATEST(dialog_sources.next_source, EXCLUDED.next_source), "
                    "next_folded = GREATEST(dialog_sources.next_folded, EXCLUDED.next_folded)",
                    [(o, p, (sources or {}).get((o, p), 0), (folded or {}).get((o, p), 0)) for o, p in keys],
                )
            if rows:
                # COPY into a scratch table, then one upsert: several times faster than executemany.
                cur.execute(
                    "CREATE TEMP TABLE IF NOT EXISTS dialog_batch (LIKE dialog_sessions INCLUDING DEFAULTS) "
                    "ON COMMIT DELETE ROWS"
                )
                with cur.copy("COPY dialog_batch (session_id, status, last_seq, state) FROM STDIN") as copy:
                    for row in rows:
                        copy.write_row(row)
                cur.execute(
                    "INSERT INTO dialog_sessions SELECT * FROM dialog_batch "
                    "ON CONFLICT (session_id) DO UPDATE SET status = EXCLUDED.status, last_seq = EXCLUDED.last_seq, "
                    "state = EXCLUDED.state, updated_at = now()"
                )
            if fenced:
                cur.executemany(
                    "INSERT INTO dialog_fenced (origin, partition, source_offset, session_id, seq, event_id, epoch, "
                    "fenced_epoch, fenced_region, event) VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s, %s) "
                    "ON CONFLICT DO NOTHING",
                    [(e.origin, e.partition, e.source_offset, e.session_id, e.seq, e.event_id, e.epoch, e.fenced_epoch,
                      e.fenced_region, e.event) for e in fenced],
                )
            erase_in(cur, erased)
            self._add_stats(cur, stats)
            if known_promotions is not None:
                # Read after this transaction's writes took their locks: a promotion recorded by
                # the service (dialog/roles.py, serve/roles.py) holds dialog_sources locked, so it
                # has either committed by now (and is seen here) or comes after this batch.
                held = {(int(e), str(r)) for e, r in cur.execute("SELECT epoch, region FROM regionsync_promotions")}
                if held != set(known_promotions) | {(p.epoch, p.region) for p in promotions}:
                    raise PromotionsChanged(f"the store knows promotions {sorted(held)}")

    def _add_stats(self, cur: psycopg.Cursor[Any], stats: Stats) -> None:
        values = stats.to_dict()
        cur.execute(
            f"INSERT INTO dialog_stats (topic, {', '.join(_STAT_COLUMNS)}) "
            f"VALUES (%(topic)s, {', '.join(f'%({c})s' for c in _STAT_COLUMNS)}) "
            f"ON CONFLICT (topic) DO UPDATE SET "
            + ", ".join(f"{c} = dialog_stats.{c} + EXCLUDED.{c}" for c in _STAT_COLUMNS),
            {"topic": self.topic, **values},
        )

    def replace_all(
        self, states: Iterable[SessionState], offsets: Mapping[TP, int], stats: Stats,
        sources: Mapping[Origin, int] | None = None, folded: Mapping[Origin, int] | None = None,
    ) -> None:
        conn = self._live
        with conn.transaction(), conn.cursor() as cur:
            cur.execute("TRUNCATE dialog_sessions")
            cur.execute("DELETE FROM dialog_offsets")
            cur.execute("DELETE FROM dialog_sources")
            cur.execute("DELETE FROM dialog_stats WHERE topic = %s", (self.topic,))
            with cur.copy("COPY dialog_sessions (session_id, status, last_seq, state) FROM STDIN") as copy:
                for s in states:
                    copy.write_row((s.session_id, s.status, s.last_seq, _dumps(s)))
            cur.executemany(
                "INSERT INTO dialog_offsets (topic, partition, next_offset) VALUES (%s, %s, %s)",
                [(t, p, o) for (t, p), o in offsets.items()],
            )
            keys = sorted(set(sources or {}) | set(folded or {}))
            cur.executemany(
                "INSERT INTO dialog_sources (origin, partition, next_source, next_folded) VALUES (%s, %s, %s, %s)",
                [(o, p, (sources or {}).get((o, p), 0), (folded or {}).get((o, p), 0)) for o, p in keys],
            )
            self._add_stats(cur, stats)

    def close(self) -> None:
        self.keyring.close()
        self._conn.close()
