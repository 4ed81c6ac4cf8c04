"""The whole embedded stack, real parts only, started once for the e2e session on free ports."""

from __future__ import annotations

import secrets
import time
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path

import psycopg
import pytest

from indexer.errors import RegionUnavailable
from regionsync.settings import Settings
from stack import stack
from tests.stacks import free_settings
from tests.state_dirs import private_state_dir


def e2e_settings(base: Path) -> Settings:
    """Settings of a whole two-region stack in ``base``: every region's ports free (brokers,
    object stores, Postgres servers, Milvus, Connect, region services, workers' metrics,
    Prometheus), since other stacks may run on this machine."""
    return free_settings(
        base / "state",
        # A password that cannot appear by accident, so tests can prove no log line or output holds it.
        pg_password=f"pw-{secrets.token_hex(8)}",
        # Small chunks: documents of a few paragraphs span several chunks, as in production.
        chunk_size=400,
        chunk_overlap=50,
    )


SEED = [
    ("seed-1", "Seeded before capture", "This row existed before the connector was applied. " * 3, ["seed"]),
    ("seed-2", "Another seeded row", "Snapshots read pre-existing rows with op r. " * 3, ["seed"]),
    ("seed-3", "Third seeded row", "A third row, present before Debezium started. " * 3, []),
]


@pytest.fixture(scope="package")
def settings() -> Iterator[Settings]:
    with private_state_dir("e2e-tests") as state:
        yield from run_stack(e2e_settings(state))


def apply_connector_patiently(settings: Settings, attempts: int = 3) -> None:
    """Register the connector; on a machine loaded by other test runs Connect's validate call can
    outlast the client's read timeout, so a timed-out attempt is retried (the call is idempotent)."""
    stack.apply_connector(settings, attempts=attempts)


def run_stack(
    s: Settings,
    apply_connector: Callable[[Settings], object] = apply_connector_patiently,
    rows: Sequence[tuple[str, str, str, list[str]]] = SEED,
) -> Iterator[Settings]:
    """The whole embedded stack with the seed ``rows`` in the CMS table before capture starts, for
    a package-scoped fixture to yield from."""
    try:
        stack.start_infra(s)
        with psycopg.connect(s.pg_dsn(), autocommit=True) as conn:
            for doc_id, title, body, tags in rows:
                conn.execute("INSERT INTO documents (id, title, body, tags) VALUES (%s, %s, %s, %s)",
                             (doc_id, title, body, tags))
        stack.start_workers(s)
        apply_connector(s)
        yield s
    finally:
        stack.down(s)


@pytest.fixture()
def db(settings: Settings) -> Iterator[psycopg.Connection]:
    with psycopg.connect(settings.pg_dsn(), autocommit=True) as conn:
        yield conn


def wait_for(check: Callable[[], bool], timeout: float = 60.0, what: str = "condition") -> None:
    """Poll ``check`` until true. A region's Milvus that refuses a connection for a moment (busy
    under load) means "not yet", not a failure: the deadline still bounds the wait."""
    deadline = time.monotonic() + timeout
    last_error: Exception | None = None
    while time.monotonic() < deadline:
        try:
            if check():
                return
        except RegionUnavailable as exc:
            last_error = exc
        time.sleep(0.25)
    why = f" (last: {last_error})" if last_error else ""
    raise AssertionError(f"timed out after {timeout:.0f}s waiting for {what}{why}")
