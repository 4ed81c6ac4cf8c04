"""A region's Postgres with TLS on (the local CA's certificate): every connection of the project
is encrypted and verifies the server (sslmode=verify-full); a client that trusts another CA is
refused. One real server, in a temporary state dir."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest

from regionsync.settings import Settings
from stack import pki, postgres
from tests.stacks import free_settings

pytestmark = pytest.mark.integration  # starts a real Postgres


@pytest.fixture
def tls_postgres(tmp_path: Path) -> Iterator[Settings]:
    settings = free_settings(tmp_path / "state", tls=True, regions=["east"])
    postgres.start(settings, "east")
    try:
        yield settings
    finally:
        postgres.stop(settings, "east")


def test_every_connection_is_encrypted_and_verifies_the_server(tls_postgres: Settings, tmp_path: Path) -> None:
    dsn = tls_postgres.postgres("east").dsn("postgres")
    assert "sslmode=verify-full" in dsn and "sslrootcert=" in dsn
    assert "sslmode=verify-full" in tls_postgres.pg_dsn_masked()
    with psycopg.connect(dsn) as conn:
        row = conn.execute("SELECT ssl, version FROM pg_stat_ssl WHERE pid = pg_backend_pid()").fetchone()
    assert row is not None and row[0] is True and str(row[1]).startswith("TLSv1.")
    other = free_settings(tmp_path / "other", tls=True, regions=["east"])
    pki.ensure(other)  # another CA: the server's certificate does not chain to it
    wrong = tls_postgres.postgres("east").dsn("postgres").replace(
        str(tls_postgres.tls_root() / "ca.pem"), str(other.tls_root() / "ca.pem"))
    with pytest.raises(psycopg.OperationalError, match="SSL error|certificate verify failed"):
        psycopg.connect(wrong, connect_timeout=5)
