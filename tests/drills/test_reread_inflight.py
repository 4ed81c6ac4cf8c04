"""Reconcile's re-read waits for transactions in flight at its WAL position (real Postgres): a
transaction that wrote a row below the position and commits later must not be beaten by a re-read
of the row's old state at the higher position."""

from __future__ import annotations

import threading
import time

import psycopg
import pytest

from drills.reread import wal_position_after_inflight
from regionsync.settings import Settings

pytestmark = pytest.mark.integration


def test_the_reread_position_is_handed_out_only_after_inflight_transactions_end(
    settings: Settings, db: psycopg.Connection
) -> None:
    db.execute("INSERT INTO documents (id, title, body) VALUES ('inflight', 'Before', 'old body') "
               "ON CONFLICT (id) DO NOTHING")
    result: dict[str, object] = {}
    with psycopg.connect(settings.pg_dsn()) as writer:
        writer.execute("UPDATE documents SET body = 'new body' WHERE id = 'inflight'")
        (lsn_of_write,) = writer.execute("SELECT (pg_current_wal_insert_lsn() - '0/0'::pg_lsn)::bigint").fetchone()

        # The taker reads the clock once for its deadline, then once after every poll that found a
        # transaction still running: its second reading says it is waiting for ours.
        readings = 0
        waiting = threading.Event()

        def clock() -> float:
            nonlocal readings
            readings += 1
            if readings >= 2:
                waiting.set()
            return time.monotonic()

        def take() -> None:
            result["position"] = wal_position_after_inflight(settings, timeout_s=60, clock=clock)
            result["at"] = time.monotonic()

        taker = threading.Thread(target=take)
        taker.start()
        assert waiting.wait(30), "the taker never polled"
        assert taker.is_alive(), "the position was handed out while a transaction that wrote below it ran"
        committed_at = time.monotonic()
        writer.commit()
        taker.join(30)
    position, waited = result["position"]  # type: ignore[misc]
    assert waited >= 1 and position >= lsn_of_write
    assert result["at"] >= committed_at  # type: ignore[operator]
    # What the agent reads now is the committed state.
    assert db.execute("SELECT body FROM documents WHERE id = 'inflight'").fetchone() == ("new body",)
    # Nothing in flight: no wait at all.
    assert wal_position_after_inflight(settings, timeout_s=5)[1] == 0


def test_a_transaction_that_never_ends_fails_the_reread_instead_of_racing_it(settings: Settings) -> None:
    with psycopg.connect(settings.pg_dsn()) as writer:
        writer.execute("UPDATE documents SET title = title WHERE id = 'seed-1'")
        with pytest.raises(Exception, match="still running"):
            wal_position_after_inflight(settings, timeout_s=1.0)
        writer.rollback()
