"""Per-session keys (:mod:`dialog.sealing`) in a region's own database, and the erased sessions.

Where a key lives decides what an erasure is worth. Not in the log: a key kept in an immutable,
replicated log would outlive every erasure. Each region keeps the keys in its state store's
database (``dialog_keys``), beside the list of sessions erased there (``dialog_erased``):

* the region service creates a session's key (committed) before it publishes the session's first
  event, so its own worker always finds it;
* the replicator that copies a region's dialog records copies their sessions' keys (and
  erasures) into the target region's database *before* the records (:class:`KeyCourier`), so a
  copied event never reaches a region ahead of its key, and a failover restores every session
  that was not erased;
* an erasure deletes the key and records the session as erased in one transaction: at once in
  the region that took the request, and in every other region when its worker folds the
  ``session_erased`` event (the same transaction as the tombstone state). Making a key, copying
  one in and erasing take the same lock per session (a transaction-level advisory lock), so a key
  the courier copies while an erasure commits cannot come back: whichever comes second sees the
  first (tests/dialog/test_erasure.py races the two).

How long an erased key can live anywhere: in the region that took the request, not at all after
the answer; in another running region, the replication lag of the erasure event plus one batch of
its worker (the fault suite's lag figures); in a region that is down, until it is back and has
folded its copy of the log. Postgres keeps a deleted row's bytes in its pages until VACUUM reuses
them, and in WAL and backups until they expire: the operator's retention for those bounds it.
"""

from __future__ import annotations

import threading
from collections.abc import Collection, Iterable, Mapping
from typing import Any, Protocol

import psycopg
from confluent_kafka import Message

from dialog.errors import DialogError
from dialog.events import KeyLookup, SealingKey
from dialog.sealing import new_key

SessionKeys = dict[tuple[str, str], bytes]  # (session id, key id) -> key

SCHEMA = """
-- kid: the region that made the key (a session has one, two after a split brain: dialog/sealing.py)
CREATE TABLE IF NOT EXISTS dialog_keys (
    session_id  text NOT NULL,
    kid         text NOT NULL,
    key         bytea NOT NULL,
    created_at  timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (session_id, kid)
);
CREATE TABLE IF NOT EXISTS dialog_erased (
    session_id  text PRIMARY KEY,
    erased_at   timestamptz NOT NULL DEFAULT now()
);
"""


class SessionIsErased(DialogError):
    """A turn or a key asked for a session that was erased: it can never be written again."""


class KeyRing(Protocol):
    def get_many(self, session_ids: Iterable[str]) -> SessionKeys:
        """The keys this region holds of these sessions (erased and unknown ones are absent)."""
        ...

    def create(self, session_id: str, kid: str) -> SealingKey:
        """The key to seal the session's events with: the one this region holds (its own if it
        holds two), else a new one named ``kid`` (this region), committed before it is returned.
        Raises :class:`SessionIsErased`."""
        ...

    def put_many(self, keys: Mapping[tuple[str, str], bytes]) -> int:
        """Store keys copied from another region (existing ones and erased sessions are left
        alone); returns how many were new."""
        ...

    def erase(self, session_ids: Iterable[str]) -> None:
        """Delete the sessions' keys and record them as erased (idempotent)."""
        ...

    def erased(self, session_ids: Iterable[str]) -> set[str]:
        """Which of these sessions this region knows as erased."""
        ...

    def everything(self) -> tuple[SessionKeys, set[str]]:
        """Every key and every erased session this region holds (a region rebuilding an empty
        store pulls them from the others: dialog/courier.py)."""
        ...


class MemoryKeyRing:
    """The contract in memory, for unit tests (tests/dialog/test_keys.py runs both)."""

    def __init__(self) -> None:
        self._keys: SessionKeys = {}
        self._erased: set[str] = set()
        self._lock = threading.Lock()

    def get_many(self, session_ids: Iterable[str]) -> SessionKeys:
        wanted = set(session_ids)
        return {sk: k for sk, k in self._keys.items() if sk[0] in wanted}

    def create(self, session_id: str, kid: str) -> SealingKey:
        with self._lock:
            if session_id in self._erased:
                raise SessionIsErased(f"session {session_id!r} was erased")
            held = {k: v for (s, k), v in self._keys.items() if s == session_id}
            if not held:
                held[kid] = self._keys[(session_id, kid)] = new_key()
            return choose(held, kid)

    def put_many(self, keys: Mapping[tuple[str, str], bytes]) -> int:
        with self._lock:
            new = {sk: k for sk, k in keys.items() if sk not in self._keys and sk[0] not in self._erased}
            self._keys.update(new)
            return len(new)

    def erase(self, session_ids: Iterable[str]) -> None:
        with self._lock:
            gone = set(session_ids)
            self._keys = {sk: k for sk, k in self._keys.items() if sk[0] not in gone}
            self._erased |= gone

    def erased(self, session_ids: Iterable[str]) -> set[str]:
        return set(session_ids) & self._erased

    def everything(self) -> tuple[SessionKeys, set[str]]:
        with self._lock:
            return dict(self._keys), set(self._erased)


def choose(held: Mapping[str, bytes], kid: str) -> SealingKey:
    """Which of a session's keys seals its new events: this region's own, else the first by id
    (every region that writes the session after a failover keeps using the key it was given)."""
    name = kid if kid in held else min(held)
    return name, held[name]


def lookup(found: Mapping[tuple[str, str], bytes]) -> KeyLookup:
    """``found`` (from :meth:`KeyRing.get_many`) as the lookup decoding takes."""
    return lambda session_id, kid: found.get((session_id, kid))


def keys_for(ring: KeyRing, msgs: Iterable[Message], skip_topics: Collection[str] = ()) -> SessionKeys:
    """The keys of the sessions of these dialog records (keyed by session id), in one query."""
    ids = {k.decode("utf-8", "replace") for m in msgs
           if m.error() is None and (k := m.key()) is not None and str(m.topic()) not in skip_topics}
    return ring.get_many(ids) if ids else {}


def erase_in(cur: psycopg.Cursor[Any], session_ids: Iterable[str]) -> None:
    """Within the caller's transaction: the sessions' keys deleted, the sessions recorded as erased."""
    ids = sorted(set(session_ids))
    if not ids:
        return
    _lock_sessions(cur, ids)
    cur.execute("DELETE FROM dialog_keys WHERE session_id = ANY(%s)", (ids,))
    cur.executemany("INSERT INTO dialog_erased (session_id) VALUES (%s) ON CONFLICT DO NOTHING", [(s,) for s in ids])


def _lock_sessions(cur: psycopg.Cursor[Any], ids: list[str]) -> None:
    """The per-session lock that :meth:`PostgresKeyRing.create`, the copy and the erasure take, in
    the sorted order of ``ids`` (unnest keeps the array's order): two callers never wait on each
    other crosswise. The statements after it see what the holder before them committed."""
    cur.execute("SELECT pg_advisory_xact_lock(hashtext('dialog_key:' || s)) FROM unnest(%s::text[]) AS s", (ids,))


class PostgresKeyRing:
    """The contract on a region's database (the state store's: :mod:`dialog.pg_store` creates the tables)."""

    def __init__(self, dsn: str, *, ensure: bool = True) -> None:
        """``ensure``: create the tables if missing. Without it (another region's database, read
        across the link by a role that may only read) a region whose tables do not exist yet has
        no keys and no erasures."""
        self._dsn = dsn
        self._ensure = ensure
        self._conn = psycopg.connect(dsn, autocommit=True, connect_timeout=10)
        if ensure:
            with self._conn.transaction():
                self._conn.execute("SELECT pg_advisory_xact_lock(hashtext('regionsync_dialog_schema'))")
                self._conn.execute(SCHEMA)

    @property
    def _live(self) -> psycopg.Connection[Any]:
        if self._conn.closed or self._conn.broken:
            self._conn = psycopg.connect(self._dsn, autocommit=True, connect_timeout=10)
        return self._conn

    def get_many(self, session_ids: Iterable[str]) -> SessionKeys:
        ids = sorted(set(session_ids))
        if not ids:
            return {}
        rows = self._read("SELECT session_id, kid, key FROM dialog_keys WHERE session_id = ANY(%s)", (ids,))
        return {(str(s), str(kid)): bytes(k) for s, kid, k in rows}

    def _read(self, query: str, params: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
        try:
            return self._live.execute(query, params).fetchall()  # type: ignore[arg-type]
        except psycopg.errors.UndefinedTable:
            if self._ensure:
                raise
            return []  # a region whose dialog store never started: nothing there yet

    def create(self, session_id: str, kid: str) -> SealingKey:
        conn = self._live
        with conn.transaction():
            # The erased check and the insert under the session's lock: an erasure committed
            # between the two would otherwise leave a fresh key for an erased session.
            conn.execute("SELECT pg_advisory_xact_lock(hashtext(%s))", (f"dialog_key:{session_id}",))
            if conn.execute("SELECT 1 FROM dialog_erased WHERE session_id = %s", (session_id,)).fetchone():
                raise SessionIsErased(f"session {session_id!r} was erased")
            rows = conn.execute("SELECT kid, key FROM dialog_keys WHERE session_id = %s", (session_id,)).fetchall()
            held = {str(k): bytes(v) for k, v in rows}
            if not held:
                held[kid] = new_key()
                conn.execute("INSERT INTO dialog_keys (session_id, kid, key) VALUES (%s, %s, %s)",
                             (session_id, kid, held[kid]))
        return choose(held, kid)

    def put_many(self, keys: Mapping[tuple[str, str], bytes]) -> int:
        if not keys:
            return 0
        conn = self._live
        with conn.transaction(), conn.cursor() as cur:
            _lock_sessions(cur, sorted({s for s, _kid in keys}))
            cur.executemany(
                "INSERT INTO dialog_keys (session_id, kid, key) SELECT %s, %s, %s WHERE NOT EXISTS "
                "(SELECT 1 FROM dialog_erased WHERE session_id = %s) ON CONFLICT DO NOTHING",
                [(s, kid, k, s) for (s, kid), k in sorted(keys.items())],
            )
            return max(cur.rowcount, 0)

    def erase(self, session_ids: Iterable[str]) -> None:
        conn = self._live
        with conn.transaction(), conn.cursor() as cur:
            erase_in(cur, session_ids)

    def erased(self, session_ids: Iterable[str]) -> set[str]:
        ids = sorted(set(session_ids))
        if not ids:
            return set()
        rows = self._read("SELECT session_id FROM dialog_erased WHERE session_id = ANY(%s)", (ids,))
        return {str(r[0]) for r in rows}

    def everything(self) -> tuple[SessionKeys, set[str]]:
        conn = self._live
        try:
            with conn.transaction():  # one snapshot of both tables
                keys = conn.execute("SELECT session_id, kid, key FROM dialog_keys").fetchall()
                erased = conn.execute("SELECT session_id FROM dialog_erased").fetchall()
        except psycopg.errors.UndefinedTable:
            if self._ensure:
                raise
            return {}, set()
        return {(str(s), str(k)): bytes(v) for s, k, v in keys}, {str(r[0]) for r in erased}

    def close(self) -> None:
        self._conn.close()
