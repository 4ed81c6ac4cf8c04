"""A region's own database: where its dialog state store, its role and fence, and the
replicators' checkpoints live (``dialog_<region>`` on the region's Postgres server).

Ground floor: the dialog store, the replicators and the region service all open it, none of them
owns it. Created on first use, so a region that starts with an empty server needs no setup step.
"""

from __future__ import annotations

import logging

import psycopg
from psycopg import sql

from regionsync.settings import Settings
from regionsync.settings_parts import PostgresSettings

log = logging.getLogger(__name__)


def ensure_database(pg: PostgresSettings, database: str, link_user: str | None = None) -> None:
    """Create ``database`` on ``pg``'s server unless it exists (races are fine); one this call
    creates is readable by ``link_user`` (:func:`grant_link_role`), if given."""
    with psycopg.connect(pg.dsn("postgres"), autocommit=True, connect_timeout=10) as conn:
        if conn.execute("SELECT 1 FROM pg_database WHERE datname = %s", (database,)).fetchone():
            return
        try:
            conn.execute(f'CREATE DATABASE "{database}"')
            log.info("created database %s", database)
        except psycopg.errors.DuplicateDatabase:  # another process won the race (and grants)
            return
    if link_user:
        grant_link_role(pg, database, link_user)


def grant_link_role(pg: PostgresSettings, database: str, user: str) -> None:
    """Let ``user``, the role other regions read this region's database as (key courier, key pull,
    mirrored acknowledgements), log in and read ``database``'s tables, present and future, and do
    nothing else. It has no password: the server admits it by client certificate only
    (stack/postgres.py's pg_hba rules)."""
    role = sql.Identifier(user)
    with psycopg.connect(pg.dsn("postgres"), autocommit=True, connect_timeout=10) as conn:
        if conn.execute("SELECT 1 FROM pg_roles WHERE rolname = %s", (user,)).fetchone() is None:
            try:
                conn.execute(sql.SQL("CREATE ROLE {} LOGIN").format(role))
            except psycopg.errors.DuplicateObject:  # another process won the race
                pass
    with psycopg.connect(pg.dsn(database), autocommit=True, connect_timeout=10) as conn:
        conn.execute(sql.SQL("GRANT USAGE ON SCHEMA public TO {}").format(role))
        conn.execute(sql.SQL("GRANT SELECT ON ALL TABLES IN SCHEMA public TO {}").format(role))
        conn.execute(sql.SQL("ALTER DEFAULT PRIVILEGES FOR ROLE {} IN SCHEMA public GRANT SELECT ON TABLES TO {}")
                     .format(sql.Identifier(pg.user), role))


def link_dsn(settings: Settings, region: str) -> str:
    """DSN of ``region``'s own database for a client in another region: the read-only link role
    over mutual TLS (``Settings.postgres_link``). Never creates anything."""
    return settings.postgres_link(region).dsn(settings.dialog_database(region))


def region_dsn(settings: Settings, region: str, create: bool = True) -> str:
    """DSN of ``region``'s own database on ``region``'s server (contains the password: never log it)."""
    pg = settings.postgres(region)
    database = settings.dialog_database(region)
    if create:
        ensure_database(pg, database, settings.link_pg_user if settings.link_tls else None)
    return pg.dsn(database)
