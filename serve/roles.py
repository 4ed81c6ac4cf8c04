"""Which region writes dialog turns: the "active region" fact, and the promotion that moves it.

Where the fact lives: one row in regionsync's own Postgres database (``pg_state_database``),
the same server both regions already depend on for the CMS and the embedding cache. Why a row
and not a compacted Kafka topic: a topic has no conditional write, so two promotions racing
would both "win" (last writer wins, each region briefly sure it is active), and a turn already
being written by the old active region could not be fenced. Postgres gives both:

* a turn is written while holding the row ``FOR SHARE`` and only if the row names this region;
* a promotion takes the row ``FOR UPDATE`` (so it waits for turns in flight anywhere, and no new
  one can start), names the new region and bumps ``epoch``. Once it commits, the old region
  refuses the next turn (409 naming the new one): there is never a moment with two writers.

After the flip the new region still refuses turns (503) until its dialog state store has folded
the log to the end, which is now fixed, because nobody else may append (see ``RegionService``).

**Fencing a hung writer.** A region whose process hangs in the middle of a turn (frozen, a VM
paused) keeps its transaction open and the row ``FOR SHARE``; a promotion would wait for it
forever (seen in the failover drill's freeze mode). Each region's writer session is named
(``application_name`` ``regionsync-writer-<region>``), so a promotion that has waited
``promote_fence_after_s`` for the row terminates the other regions' writer sessions that hold it,
then takes it. The fenced region's turn cannot finish: it checks its session right before it
publishes the turn's events (:meth:`ActiveRegionStore.check_writer`) and its commit fails, so the
customer never sees it acknowledged. What no row lock can stop: a process frozen *between* that
check and the publish and thawed after the promotion would still append that turn's events; the
failover drill kills a frozen region before starting it again, and a log with a producer epoch
(Kafka transactions, which the embedded broker does not honour) would close that gap.

The decisions are pure functions (:func:`may_write`, :func:`promotion`); :class:`ActiveRegionStore`
is the Postgres I/O around them.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

import psycopg

from regionsync.settings import Settings
from serve.errors import Fenced, NotActive, ServeError

log = logging.getLogger(__name__)

SCHEMA = """
CREATE TABLE IF NOT EXISTS regionsync_active_region (
    singleton   boolean PRIMARY KEY DEFAULT true CHECK (singleton),
    region      text NOT NULL,
    epoch       bigint NOT NULL,
    previous    text,
    promoted_at timestamptz NOT NULL DEFAULT now()
)
"""


@dataclass(frozen=True)
class Active:
    region: str
    epoch: int  # bumped by every promotion that moves the role: a fencing token
    previous: str | None = None


@dataclass(frozen=True)
class Promotion:
    before: Active
    after: Active

    @property
    def changed(self) -> bool:
        return self.after.epoch != self.before.epoch


def may_write(active: Active, region: str) -> None:
    """Raise :class:`NotActive` unless ``region`` is the one that writes turns."""
    if active.region != region:
        raise NotActive(region, active.region)


def promotion(current: Active, region: str) -> Promotion:
    """Promoting the active region again changes nothing (idempotent); otherwise a new epoch."""
    if current.region == region:
        return Promotion(current, current)
    return Promotion(current, Active(region, current.epoch + 1, current.region))


class ActiveRegionStore:
    """The active-region row. The first region of ``settings.regions`` is active until a promotion."""

    def __init__(self, settings: Settings, lock_timeout_s: float = 30.0) -> None:
        self._dsn = settings.pg_dsn(settings.pg_state_database)
        self._default = settings.regions[0]
        self._lock_timeout_ms = int(lock_timeout_s * 1000)
        self._fence_after_ms = int(settings.promote_fence_after_s * 1000)
        try:
            with psycopg.connect(self._dsn, autocommit=True) as conn, conn.transaction():
                # Two services starting together would race CREATE TABLE IF NOT EXISTS (a known
                # Postgres race on the type name): serialise them.
                conn.execute("SELECT pg_advisory_xact_lock(hashtext('regionsync_active_region'))")
                conn.execute(SCHEMA)
                conn.execute(
                    "INSERT INTO regionsync_active_region (region, epoch) VALUES (%s, 1) ON CONFLICT DO NOTHING",
                    (self._default,),
                )
        except psycopg.Error as exc:
            raise ServeError(f"active-region store unavailable: {exc}") from exc
        self._writer: psycopg.Connection | None = None

    def _connect(self, application_name: str = "regionsync-serve") -> psycopg.Connection:
        conn = psycopg.connect(self._dsn, autocommit=True, application_name=application_name)
        conn.execute(f"SET lock_timeout = {self._lock_timeout_ms}")
        return conn

    def current(self) -> Active:
        with psycopg.connect(self._dsn, autocommit=True) as conn:
            return _read(conn, "")

    @contextmanager
    def writing(self, region: str) -> Iterator[Active]:
        """Hold the row shared while the caller writes a turn; raise :class:`NotActive` unless
        ``region`` is active. One writer connection per service (turns are serialised)."""
        try:
            if self._writer is None or self._writer.closed:
                self._writer = self._connect(writer_name(region))
        except psycopg.Error as exc:
            raise ServeError(f"active-region store unavailable: {exc}") from exc
        conn = self._writer
        try:
            with conn.transaction():
                active = _read(conn, "FOR SHARE")
                may_write(active, region)
                yield active
        except psycopg.OperationalError as exc:
            conn.close()  # reconnect next time
            # Fenced by a promotion elsewhere, Postgres down or restarting, or a promotion holding the
            # row past lock_timeout: nothing was written; the HTTP layer answers 503 (retry later).
            raise Fenced(f"region {region}'s turn was not written: its session with the active-region row ended "
                         f"(fenced by a promotion elsewhere, or the database restarted): {exc}") from exc

    def check_writer(self) -> None:
        """Called inside :meth:`writing`, right before a turn's events are published: raise
        :class:`Fenced` if a promotion has terminated this writer's session meanwhile."""
        conn = self._writer
        if conn is None or conn.closed:
            raise Fenced("no writer session")
        try:
            conn.execute("SELECT 1")
        except psycopg.OperationalError as exc:
            raise Fenced(f"this region's writer session was fenced: {exc}") from exc

    def promote(self, region: str) -> Promotion:
        """Make ``region`` the active one. Waits for turns in flight in any region; one that holds
        the row longer than ``promote_fence_after_s`` is fenced (its writer session terminated)."""
        with self._connect() as conn:
            conn.execute(f"SET lock_timeout = {self._fence_after_ms}")
            try:
                return self._flip(conn, region)
            except psycopg.errors.LockNotAvailable:
                fenced = fence_writers(conn, region)
                log.warning("promotion of %s waited %.1fs for the active-region row: fenced the writer sessions %s",
                            region, self._fence_after_ms / 1000, fenced)
            conn.execute(f"SET lock_timeout = {self._lock_timeout_ms}")
            return self._flip(conn, region)

    def _flip(self, conn: psycopg.Connection, region: str) -> Promotion:
        with conn.transaction():
            plan = promotion(_read(conn, "FOR UPDATE"), region)
            if plan.changed:
                conn.execute(
                    "UPDATE regionsync_active_region SET region = %s, epoch = %s, previous = %s, promoted_at = now()",
                    (plan.after.region, plan.after.epoch, plan.after.previous),
                )
                log.info("active region: %s -> %s (epoch %d)", plan.before.region, region, plan.after.epoch)
            return plan

    def close(self) -> None:
        if self._writer is not None:
            self._writer.close()


WRITER_PREFIX = "regionsync-writer-"


def writer_name(region: str) -> str:
    """``application_name`` of a region's writer session (Postgres keeps at most 63 bytes)."""
    return f"{WRITER_PREFIX}{region}"[:63]


def fence_writers(conn: psycopg.Connection, promoting: str) -> list[str]:
    """Terminate the writer sessions of other regions that hold a lock on the active-region row."""
    rows = conn.execute(
        """
        SELECT a.application_name, a.pid, pg_terminate_backend(a.pid)
        FROM pg_stat_activity a
        WHERE starts_with(a.application_name, %s) AND a.application_name <> %s AND a.pid <> pg_backend_pid()
          AND a.pid IN (SELECT l.pid FROM pg_locks l
                        WHERE l.relation = 'regionsync_active_region'::regclass AND l.granted)
        """,
        (WRITER_PREFIX, writer_name(promoting)),
    ).fetchall()
    return [f"{name} (pid {pid})" for name, pid, _ok in rows]


def _read(conn: psycopg.Connection, lock: str) -> Active:
    row = conn.execute(f"SELECT region, epoch, previous FROM regionsync_active_region {lock}").fetchone()
    if row is None:
        raise ServeError("active-region row missing")
    return Active(str(row[0]), int(row[1]), row[2])
