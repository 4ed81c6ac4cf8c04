"""Cleanup after a Debezium Postgres connector is deleted: its replication slot and publication.

Deleting a connector in Kafka Connect leaves both behind in Postgres; a slot nobody reads pins
WAL forever, so the disk fills. Call :func:`drop` after the connector is gone: its task may still
hold the slot for a moment while it shuts down, so dropping waits (a few seconds) for the slot to
become inactive and never terminates the backend that holds it.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass

import psycopg
from psycopg import sql

from connectors.errors import SlotError
from regionsync.settings import Settings

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Dropped:
    slot: bool
    publication: bool


def drop_slot(conn: psycopg.Connection, slot: str, wait_s: float = 10.0) -> bool:
    """Drop replication slot ``slot``; False if there was none. Waits while it is still active."""
    deadline = time.monotonic() + wait_s
    while True:
        row = conn.execute("SELECT active, active_pid FROM pg_replication_slots WHERE slot_name = %s", (slot,)).fetchone()
        if row is None:
            return False
        active, pid = row
        if not active:
            try:
                conn.execute("SELECT pg_drop_replication_slot(%s)", (slot,))
            except psycopg.errors.UndefinedObject:
                return False  # dropped by someone else meanwhile
            except psycopg.errors.ObjectInUse:
                pass  # a reader took it again between our check and the drop: wait and retry
            else:
                log.info("dropped replication slot %s", slot)
                return True
        if time.monotonic() >= deadline:
            raise SlotError(
                f"replication slot {slot} is still in use by backend pid {pid} after {wait_s:.0f}s; "
                "is the connector still running somewhere? Stop it and run the delete again"
            )
        time.sleep(0.2)


def drop_publication(conn: psycopg.Connection, publication: str) -> bool:
    """Drop publication ``publication`` in the connected database; False if there was none."""
    if conn.execute("SELECT 1 FROM pg_publication WHERE pubname = %s", (publication,)).fetchone() is None:
        return False
    conn.execute(sql.SQL("DROP PUBLICATION IF EXISTS {}").format(sql.Identifier(publication)))
    log.info("dropped publication %s", publication)
    return True


def drop(settings: Settings, slot: str | None = None, publication: str | None = None, wait_s: float = 10.0) -> Dropped:
    """Drop the slot and the publication (names default to the settings') in the captured database."""
    slot = slot or settings.replication_slot
    publication = publication or settings.publication
    try:
        with psycopg.connect(settings.pg_dsn(), autocommit=True, connect_timeout=10) as conn:
            return Dropped(slot=drop_slot(conn, slot, wait_s), publication=drop_publication(conn, publication))
    except psycopg.Error as exc:
        # psycopg's messages name host, user and database, never the password.
        raise SlotError(f"cannot drop slot {slot} / publication {publication} on {settings.pg_dsn_masked()}: {exc}") from exc
