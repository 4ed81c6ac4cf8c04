"""A region's own database: where its dialog state store, its role and fence, and the
replicators' checkpoints live (``dialog_<region>`` on the region's Postgres server).

Ground floor: the dialog store, the replicators and the region service all open it, none of them
owns it. Created on first use, so a region that starts with an empty server needs no setup step.
"""

from __future__ import annotations

import logging

import psycopg

from regionsync.settings import Settings
from regionsync.settings_parts import PostgresSettings

log = logging.getLogger(__name__)


def ensure_database(pg: PostgresSettings, database: str) -> None:
    """Create ``database`` on ``pg``'s server unless it exists (races are fine)."""
    with psycopg.connect(pg.dsn("postgres"), autocommit=True, connect_timeout=10) as conn:
        if conn.execute("SELECT 1 FROM pg_database WHERE datname = %s", (database,)).fetchone():
            return
        try:
            conn.execute(f'CREATE DATABASE "{database}"')
            log.info("created database %s", database)
        except psycopg.errors.DuplicateDatabase:  # another process won the race
            pass


def link_dsn(settings: Settings, region: str) -> str:
    """DSN of ``region``'s own database for a client in another region: the read-only link role
    over mutual TLS (``Settings.postgres_link``). Never creates anything."""
    return settings.postgres_link(region).dsn(settings.dialog_database(region))


def region_dsn(settings: Settings, region: str, create: bool = True) -> str:
    """DSN of ``region``'s own database on ``region``'s server (contains the password: never log it)."""
    pg = settings.postgres(region)
    database = settings.dialog_database(region)
    if create:
        ensure_database(pg, database)
    return pg.dsn(database)
