"""The Debezium connector end to end on a real Kafka Connect worker, tansu and Postgres.

What arrives on ``cms.public.documents`` (JsonConverter, schemas disabled), as these tests pin down:

- key: ``{"id": "<document id>"}``; Debezium's record key is the primary key.
- value: ``{"before", "after", "source", "op", "transaction", "ts_ms", "ts_us", "ts_ns"}``;
  ``op`` is ``r`` (snapshot read), ``c``, ``u`` or ``d``. With REPLICA IDENTITY FULL an update
  has the full ``before`` and a delete's ``before`` holds the whole old row (``after`` null).
- after a delete comes a tombstone: same key, value None (``msg.value() is None``).
- ``source.lsn`` is a JSON integer (the change's LSN); ``source.txId`` an integer;
  ``source.snapshot`` a string (``"true"``, ``"last"``, ``"false"``); ``source.sequence`` a
  JSON-encoded string ``'["<last commit lsn>","<lsn>"]'``.
- ``text[]`` arrives as a JSON array of strings (NULL elements as null, ``'{}'`` as ``[]``, a
  NULL column as null).
- ``timestamptz`` arrives as an ISO-8601 string in UTC with exactly six fractional digits and a
  ``Z``: ``'2024-03-01 10:00:00.5+02'`` becomes ``"2024-03-01T08:00:00.500000Z"``.
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
from typing import Any

import pytest
import requests

from connectors import slots
from connectors.client import ConnectClient
from connectors.config import load
from connectors.errors import ConfigInvalid, ConnectorFailed
from stack import connect

from .conftest import PG_PASSWORD, Change, ReadChanges, Stack

pytestmark = pytest.mark.integration

SNAPSHOT_ID = "doc-before-connector"


@pytest.fixture(scope="module")
def client(connect_stack: Stack) -> ConnectClient:
    return ConnectClient(connect_stack.settings.connect_url, timeout=10)


@pytest.fixture(scope="module")
def applied(connect_stack: Stack, client: ConnectClient) -> dict[str, str]:
    """The connector, validated, created and RUNNING; one row existed before it (the snapshot)."""
    settings = connect_stack.settings
    connect_stack.sql(
        "INSERT INTO documents (id, title, body, tags) VALUES (%s, 'Before', 'snapshot body', ARRAY['s'])",
        (SNAPSHOT_ID,),
    )
    config = load(settings)
    assert client.validate(config, name=settings.connector_name) == []
    started = time.monotonic()
    assert client.apply(settings.connector_name, config) == "created"
    client.wait_running(settings.connector_name, timeout=90)
    connect_stack.timings["connector_running_s"] = time.monotonic() - started
    return config


def _cli(stack: Stack, *argv: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "cli", *argv],
        capture_output=True, text=True, env=stack.settings.child_env(), timeout=120,
    )


def _ops(changes: list[Change]) -> list[str | None]:
    return [c.value["op"] if c.value is not None else None for c in changes]


def test_apply_is_idempotent(connect_stack: Stack, client: ConnectClient, applied: dict[str, str]) -> None:
    name = connect_stack.settings.connector_name
    assert client.apply(name, applied) == "unchanged"
    assert name in client.list()
    stored = client.get_config(name)
    assert stored is not None and stored["slot.name"] == connect_stack.settings.replication_slot

    assert client.apply(name, {**applied, "poll.interval.ms": "60"}) == "updated"
    assert client.apply(name, applied) == "updated"
    assert client.apply(name, applied) == "unchanged"
    client.wait_running(name, timeout=60)


def test_invalid_config_is_rejected_without_leaking_the_password(
    connect_stack: Stack, client: ConnectClient, applied: dict[str, str]
) -> None:
    wrong = "wr0ng-pw-Zq81"
    bad = {**applied, "database.password": wrong, "slot.name": "never_created"}
    errors = client.validate(bad, name="invalid")
    assert errors and any(e.startswith("database.") for e in errors), errors
    with pytest.raises(ConfigInvalid) as info:
        client.apply("invalid", bad)
    assert wrong not in str(info.value)
    assert "invalid" not in client.list()


def test_wait_running_fails_fast_with_the_trace(
    connect_stack: Stack, client: ConnectClient, applied: dict[str, str]
) -> None:
    # Passes Connect's validation, fails when the task starts: a filtered publication needs a table.
    broken = {
        **applied, "table.include.list": "public.no_such_table", "topic.prefix": "broken",
        "slot.name": "broken_slot", "publication.name": "broken_pub",
    }
    assert client.apply("broken", broken) == "created"
    try:
        started = time.monotonic()
        with pytest.raises(ConnectorFailed) as info:
            client.wait_running("broken", timeout=60)
        assert time.monotonic() - started < 30
        assert info.value.trace.strip() and PG_PASSWORD not in str(info.value)
        print(f"\nFAILED trace head: {info.value.trace.splitlines()[:2]}")
        client.restart("broken", failed_only=True)
        with pytest.raises(ConnectorFailed):
            client.wait_running("broken", timeout=60)
    finally:
        assert client.delete("broken")
    assert client.delete("broken") is False
    slots.drop(connect_stack.settings, slot="broken_slot", publication="broken_pub")
    assert not connect_stack.sql("SELECT 1 FROM pg_replication_slots WHERE slot_name = 'broken_slot'")


def test_snapshot_insert_update_delete_and_tombstone(
    connect_stack: Stack, applied: dict[str, str], read_changes: ReadChanges
) -> None:
    snap = read_changes(SNAPSHOT_ID, lambda found: len(found) >= 1, 30)[0]
    assert snap.value is not None and snap.value["op"] == "r" and snap.value["before"] is None
    assert snap.value["source"]["snapshot"] in ("true", "last")
    assert snap.value["after"]["tags"] == ["s"]

    doc = "doc-lifecycle"
    connect_stack.sql(
        "INSERT INTO documents (id, title, body, tags, status, updated_at) "
        "VALUES (%s, 'T1', 'body one', ARRAY['x', NULL, 'y z'], 'draft', '2024-03-01 10:00:00.123456+02')",
        (doc,),
    )
    connect_stack.sql("UPDATE documents SET body = 'body two', tags = '{}', status = 'published' WHERE id = %s", (doc,))
    connect_stack.sql("DELETE FROM documents WHERE id = %s", (doc,))
    changes = read_changes(doc, lambda found: len(found) >= 4, 30)

    assert _ops(changes) == ["c", "u", "d", None]
    assert all(c.key == {"id": doc} for c in changes)
    assert len({c.partition for c in changes}) == 1
    create, update, delete, tombstone = changes
    assert tombstone.value is None and tombstone.offset == delete.offset + 1

    assert create.value is not None and update.value is not None and delete.value is not None
    row1 = {
        "id": doc, "title": "T1", "body": "body one", "tags": ["x", None, "y z"], "status": "draft",
        "updated_at": "2024-03-01T08:00:00.123456Z",
    }
    row2 = {**row1, "body": "body two", "tags": [], "status": "published"}
    assert create.value["before"] is None and create.value["after"] == row1
    assert update.value["before"] == row1 and update.value["after"] == row2
    assert delete.value["before"] == row2 and delete.value["after"] is None

    sources: list[dict[str, Any]] = [c.value["source"] for c in (create, update, delete) if c.value is not None]
    assert all(isinstance(s["lsn"], int) for s in sources)
    assert sources[0]["lsn"] < sources[1]["lsn"] < sources[2]["lsn"]
    assert all(s["snapshot"] == "false" and s["table"] == "documents" and s["schema"] == "public" for s in sources)
    assert isinstance(sources[0]["txId"], int)
    assert json.loads(sources[0]["sequence"])[1] == str(sources[0]["lsn"])


def test_timestamptz_and_null_array(connect_stack: Stack, applied: dict[str, str], read_changes: ReadChanges) -> None:
    doc = "doc-types"
    connect_stack.sql(
        "INSERT INTO documents (id, title, body, tags, updated_at) VALUES (%s, 'T', 'b', NULL, '2024-03-01 10:00:00.5+02')",
        (doc,),
    )
    (create,) = read_changes(doc, lambda found: len(found) >= 1, 30)
    assert create.value is not None
    assert create.value["after"]["tags"] is None
    assert create.value["after"]["updated_at"] == "2024-03-01T08:00:00.500000Z"


def test_restart_and_resume(connect_stack: Stack, client: ConnectClient, applied: dict[str, str], read_changes: ReadChanges) -> None:
    name = connect_stack.settings.connector_name
    run_key = "__debezium.context.runId"
    before = "doc-before-restart"
    connect_stack.sql("INSERT INTO documents (id, title, body) VALUES (%s, 'R', 'before restart')", (before,))
    (old_run,) = read_changes(before, lambda found: len(found) >= 1, 30)

    nothing = client.restart(name, failed_only=True)  # nothing failed: nothing restarts
    assert nothing is None or all(t["state"] != "RESTARTING" for t in nothing["tasks"])
    answer = client.restart(name, failed_only=False)
    assert answer is None or [t["state"] for t in answer["tasks"]] == ["RESTARTING"]
    client.wait_running(name, timeout=60)

    # Connect restarts the task asynchronously: "RUNNING" may still be the old run for a moment,
    # so rows go in one by one until one comes from the restarted task (Debezium stamps each run);
    # every row written across the restart must arrive (at least once: a restart may redeliver).
    deadline = time.monotonic() + 90
    runs: list[str] = []
    while not runs or runs[-1] == old_run.headers[run_key]:
        assert time.monotonic() < deadline, f"no event from a restarted task; runs seen: {runs}"
        doc = f"doc-after-restart-{len(runs)}"
        connect_stack.sql("INSERT INTO documents (id, title, body) VALUES (%s, 'R', 'after restart')", (doc,))
        found = read_changes(doc, lambda found: len(found) >= 1, 45)
        assert set(_ops(found)) == {"c"}
        runs.append(found[-1].headers[run_key])
    assert runs[-1] != old_run.headers[run_key]


def test_cli_status_and_no_secret_in_outputs(connect_stack: Stack, applied: dict[str, str]) -> None:
    proc = _cli(connect_stack, "connectors", "status", "--json")
    assert proc.returncode == 0, proc.stderr
    status = json.loads(proc.stdout)
    assert status["connector"]["state"] == "RUNNING" and status["tasks"][0]["state"] == "RUNNING"

    human = _cli(connect_stack, "connectors", "status")
    assert human.returncode == 0 and "connector RUNNING; task 0 RUNNING" in human.stdout
    for out in (proc.stdout, proc.stderr, human.stdout, human.stderr):
        assert PG_PASSWORD not in out
    # Connect's own answers about the running connector: the password is a reference it resolves
    # from its environment (the task above connected with it, so it was resolved).
    name = connect_stack.settings.connector_name
    base = connect_stack.settings.connect_url.rstrip("/")
    for path in ("", "/config", "/tasks", "/status"):
        body = requests.get(f"{base}/connectors/{name}{path}", timeout=10).text
        assert PG_PASSWORD not in body, path
    assert "${env:CMS_PG_PASSWORD}" in requests.get(f"{base}/connectors/{name}/config", timeout=10).text
    worker_log = connect_stack.settings.state_dir / "logs" / f"{connect.NAME}.log"
    assert PG_PASSWORD not in worker_log.read_text(errors="replace")


def test_zz_delete_drops_slot_and_publication(connect_stack: Stack, applied: dict[str, str]) -> None:
    """Runs last (name): it removes the connector the other tests use."""
    settings = connect_stack.settings
    slot_q = "SELECT slot_name FROM pg_replication_slots WHERE slot_name = %s"
    pub_q = "SELECT pubname FROM pg_publication WHERE pubname = %s"
    assert connect_stack.sql(slot_q, (settings.replication_slot,))
    assert connect_stack.sql(pub_q, (settings.publication,))

    proc = _cli(connect_stack, "connectors", "delete")
    assert proc.returncode == 0, proc.stderr
    assert f"replication slot {settings.replication_slot}: dropped" in proc.stdout
    assert f"publication {settings.publication}: dropped" in proc.stdout
    assert not connect_stack.sql(slot_q, (settings.replication_slot,))
    assert not connect_stack.sql(pub_q, (settings.publication,))
    assert settings.connector_name not in ConnectClient(settings.connect_url).list()

    again = _cli(connect_stack, "connectors", "delete")
    assert again.returncode == 0, again.stderr
    assert "not found" in again.stdout and "absent" in again.stdout
    print(f"\ntimings: {connect_stack.timings}")
