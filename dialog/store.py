"""A region's dialog state store: session states plus the log positions they reflect.

The one rule: states and positions change together, in one transaction (:meth:`StateStore.commit`),
so after any crash the store holds exactly the states folded from the log up to the stored
positions, and a restarted worker resumes at those positions: every event is applied to the
stored state exactly once. ``commit`` also checks that the positions it moves from are the ones
stored (compare-and-set), so a second worker on the same store fails loudly instead of
interleaving with the first.

A region folds several topics (its own dialog topic and the copies of every other region's,
plus the control topics: :mod:`mirror.policy`), so a position is per (topic, partition). Beside
it the store keeps, per (origin region, partition), the next *source* offset folded (a copied
record's offset in its own region, from its provenance header): promotions cut the log in those
coordinates (:mod:`dialog.fence`). The same transaction records the promotions the worker read
and the fenced events it set aside (the conflict report), so those are exact across crashes too.

Two implementations with one contract (tests/dialog/test_store_contract.py): :class:`MemoryStore`
and :class:`PostgresStore` (one database per region, created on demand).
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, fields
from typing import Any, Protocol

import orjson
import psycopg

from dialog import roles
from dialog.errors import OffsetConflict, PromotionsChanged
from dialog.fence import Promotion
from dialog.state import SessionState
from regionsync.pgdb import region_dsn
from regionsync.settings import Settings

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Stats:
    """Counters kept in the same transaction as the states (so they are exact across crashes)."""

    applied: int = 0
    duplicates: int = 0
    conflicts: int = 0
    late: int = 0
    gaps: int = 0
    dead_letters: int = 0
    fenced: int = 0  # events set aside by a promotion's cut (dialog/fence.py)

    def __add__(self, other: Stats) -> Stats:
        return Stats(*(getattr(self, f.name) + getattr(other, f.name) for f in fields(self)))

    def to_dict(self) -> dict[str, int]:
        return {f.name: getattr(self, f.name) for f in fields(self)}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Stats:
        return cls(**{f.name: int(data.get(f.name, 0)) for f in fields(cls)})


TP = tuple[str, int]  # (topic, partition) as named on this region's broker
Origin = tuple[str, int]  # (origin region, partition of its dialog topic)


@dataclass(frozen=True)
class FencedEvent:
    """A dialog event no region folds: a promotion's cut fences it (see :mod:`dialog.fence`)."""

    origin: str
    partition: int
    source_offset: int
    session_id: str
    seq: int
    event_id: str
    epoch: int
    fenced_epoch: int
    fenced_region: str
    event: bytes  # the record's value, as written: the conflict report shows the turn

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {f.name: getattr(self, f.name) for f in fields(self) if f.name != "event"}
        try:
            out["event"] = orjson.loads(self.event)
        except orjson.JSONDecodeError:
            out["event"] = self.event.decode("utf-8", "replace")
        return out


class StateStore(Protocol):
    topic: str  # the region's own dialog topic (names the counters)

    def get(self, session_id: str) -> SessionState | None:
        """The stored state of one session (None if the store never saw it)."""
        ...

    def all_states(self) -> list[SessionState]:
        """Every stored state (a worker loads them once at start; snapshots write them)."""
        ...

    def count(self) -> int: ...

    def offsets(self) -> dict[TP, int]:
        """(topic, partition) -> next offset to consume. Empty: never consumed anything."""
        ...

    def sources(self) -> dict[Origin, int]:
        """(origin region, partition) -> next source offset consumed of that region's dialog topic."""
        ...

    def folded(self) -> dict[Origin, int]:
        """(origin region, partition) -> one past the source offset of the newest event folded."""
        ...

    def stats(self) -> Stats: ...

    def promotions(self) -> list[Promotion]:
        """Every promotion this store knows (its own and those read from other regions)."""
        ...

    def fenced(self) -> list[FencedEvent]:
        """The conflict report: every event set aside, oldest first."""
        ...

    def is_empty(self) -> bool:
        """No states and no positions: a store that a rebuild may fill from a snapshot."""
        ...

    def commit(
        self, states: Iterable[SessionState], offsets: Mapping[TP, int], expected: Mapping[TP, int], stats: Stats,
        *, sources: Mapping[Origin, int] | None = None, folded: Mapping[Origin, int] | None = None,
        fenced: Sequence[FencedEvent] = (), promotions: Sequence[Promotion] = (),
        known_promotions: Iterable[tuple[int, str]] | None = None,
    ) -> None:
        """Atomically upsert ``states``, move each (topic, partition) from ``expected[tp]`` (absent
        = never stored) to ``offsets[tp]``, raise the source positions to ``sources`` and
        ``folded``, add ``stats``, record ``fenced`` events and ``promotions``. Raises
        :class:`OffsetConflict`, having written nothing, if a stored position is not the expected
        one, and :class:`PromotionsChanged` if ``known_promotions`` (the (epoch, region) of every
        promotion the batch was folded with) is not what the store holds at commit time: a
        promotion recorded meanwhile may fence events of the batch."""
        ...

    def replace_all(
        self, states: Iterable[SessionState], offsets: Mapping[TP, int], stats: Stats,
        sources: Mapping[Origin, int] | None = None, folded: Mapping[Origin, int] | None = None,
    ) -> None:
        """Atomically replace states, positions and counters (loading a snapshot, folding the log
        again): readers see the old content or the new. Promotions and fenced events stay."""
        ...

    def close(self) -> None: ...


# ---------------------------------------------------------------------------- in memory


class MemoryStore:
    def __init__(self, topic: str) -> None:
        self.topic = topic
        self._states: dict[str, SessionState] = {}
        self._offsets: dict[TP, int] = {}
        self._sources: dict[Origin, int] = {}
        self._folded: dict[Origin, int] = {}
        self._stats = Stats()
        self._promotions: dict[tuple[int, str], Promotion] = {}
        self._fenced: dict[tuple[str, int, int], FencedEvent] = {}
        self._lock = threading.Lock()

    def get(self, session_id: str) -> SessionState | None:
        return self._states.get(session_id)

    def all_states(self) -> list[SessionState]:
        return list(self._states.values())

    def count(self) -> int:
        return len(self._states)

    def offsets(self) -> dict[TP, int]:
        return dict(self._offsets)

    def sources(self) -> dict[Origin, int]:
        return dict(self._sources)

    def folded(self) -> dict[Origin, int]:
        return dict(self._folded)

    def stats(self) -> Stats:
        return self._stats

    def promotions(self) -> list[Promotion]:
        return sorted(self._promotions.values(), key=lambda p: p.ballot)

    def record_promotion(self, promo: Promotion) -> None:
        with self._lock:
            self._promotions.setdefault((promo.epoch, promo.region), promo)

    def fenced(self) -> list[FencedEvent]:
        return list(self._fenced.values())

    def is_empty(self) -> bool:
        return not self._states and not self._offsets

    def commit(
        self, states: Iterable[SessionState], offsets: Mapping[TP, int], expected: Mapping[TP, int], stats: Stats,
        *, sources: Mapping[Origin, int] | None = None, folded: Mapping[Origin, int] | None = None,
        fenced: Sequence[FencedEvent] = (), promotions: Sequence[Promotion] = (),
        known_promotions: Iterable[tuple[int, str]] | None = None,
    ) -> None:
        with self._lock:
            new = {(p.epoch, p.region) for p in promotions}
            if known_promotions is not None and set(known_promotions) | new != set(self._promotions) | new:
                raise PromotionsChanged(f"the store knows promotions {sorted(set(self._promotions) | new)}")
            for tp in offsets:
                if self._offsets.get(tp) != expected.get(tp):
                    raise OffsetConflict(
                        f"{tp[0]}[{tp[1]}]: stored position {self._offsets.get(tp)}, expected {expected.get(tp)}"
                    )
            for state in states:
                self._states[state.session_id] = state
            self._offsets.update(offsets)
            for key, value in (sources or {}).items():
                self._sources[key] = max(self._sources.get(key, 0), value)
            for key, value in (folded or {}).items():
                self._folded[key] = max(self._folded.get(key, 0), value)
            self._stats = self._stats + stats
            for promo in promotions:
                self._promotions.setdefault((promo.epoch, promo.region), promo)
            for ev in fenced:
                self._fenced.setdefault((ev.origin, ev.partition, ev.source_offset), ev)

    def replace_all(
        self, states: Iterable[SessionState], offsets: Mapping[TP, int], stats: Stats,
        sources: Mapping[Origin, int] | None = None, folded: Mapping[Origin, int] | None = None,
    ) -> None:
        new = {s.session_id: s for s in states}
        with self._lock:
            self._states, self._offsets, self._stats = new, dict(offsets), stats
            self._sources, self._folded = dict(sources or {}), dict(folded or {})

    def close(self) -> None:
        pass


# ---------------------------------------------------------------------------- Postgres

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
        known_promotions: Iterable[tuple[int, str]] | None = None,
    ) -> None:
        rows = [(s.session_id, s.status, s.last_seq, _dumps(s)) for s in states]
        try:
            self._commit(rows, offsets, expected, stats, sources, folded, fenced, promotions, known_promotions,
                         self._fence_after_ms if promotions else 0)
        except psycopg.errors.LockNotAvailable:
            # A turn of this region holds the role row and does not finish (its service hangs):
            # cut its session, then record the promotion (serve/roles.py explains the fence).
            with psycopg.connect(self._dsn, autocommit=True, connect_timeout=10) as side:
                cut = roles.fence_writers(side, self.region)
            log.warning("recording a promotion waited %d ms for a turn of this region: fenced %s",
                        self._fence_after_ms, cut)
            self._commit(rows, offsets, expected, stats, sources, folded, fenced, promotions, known_promotions, 0)

    def _commit(
        self, rows: list[tuple[str, str, int, str]], offsets: Mapping[TP, int], expected: Mapping[TP, int],
        stats: Stats, sources: Mapping[Origin, int] | None, folded: Mapping[Origin, int] | None,
        fenced: Sequence[FencedEvent], promotions: Sequence[Promotion],
        known_promotions: Iterable[tuple[int, str]] | None, lock_timeout_ms: int,
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
        self._conn.close()
