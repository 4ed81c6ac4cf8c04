"""Starting the embedded Postgres again after it was SIGKILLed (the fault suite's postgres-restart).

The killed postmaster leaves ``postmaster.pid``. Postgres refuses to start while the PID in it
answers ``kill(pid, 0)``, which a zombie nobody has reaped yet does: the full fault suite met it on
a loaded machine (both starts failed, "lock file already exists"). A backend orphaned by the kill
and still attached to the old shared memory must still stop the start.

Every region has its own server; this runs the source region's (it holds the CMS table the
tests write to). The start path is the same for every region.
"""

from __future__ import annotations

import os
import signal
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest

from drills.inject import descendants
from regionsync.errors import StackError
from regionsync.settings import Settings
from stack import postgres
from tests.e2e.conftest import e2e_settings
from tests.state_dirs import private_state_dir

pytestmark = pytest.mark.integration


@pytest.fixture()
def settings() -> Iterator[Settings]:
    with private_state_dir("pglock-tests") as state:
        s = e2e_settings(state)
        postgres.start(s, s.source_region)
        try:
            yield s
        finally:
            postgres.stop(s, s.source_region)


def _data_dir(settings: Settings) -> Path:
    return postgres.data_dir(settings, settings.source_region)


def _postmaster(settings: Settings) -> int:
    return int((_data_dir(settings) / "postmaster.pid").read_text().split()[0])


def _gone(pids: list[int]) -> None:
    deadline = time.monotonic() + 30
    while any(os.path.exists(f"/proc/{p}") and _state(p) != "Z" for p in pids):
        assert time.monotonic() < deadline, "the killed server's processes did not exit"
        time.sleep(0.05)


def _state(pid: int) -> str:
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0]
    except OSError:
        return ""


def _write_row(settings: Settings, doc_id: str) -> None:
    with psycopg.connect(settings.pg_dsn(), autocommit=True) as conn:
        conn.execute("INSERT INTO documents (id, title, body) VALUES (%s, 't', 'b')", (doc_id,))


def _has_row(settings: Settings, doc_id: str) -> bool:
    with psycopg.connect(settings.pg_dsn(), autocommit=True) as conn:
        return conn.execute("SELECT 1 FROM documents WHERE id = %s", (doc_id,)).fetchone() is not None


def test_a_killed_server_whose_lock_names_a_zombie_starts_again(settings: Settings) -> None:
    _write_row(settings, "before-kill")
    pm = _postmaster(settings)
    pids = [pm, *descendants(pm)]
    for p in pids:
        os.kill(p, signal.SIGKILL)
    _gone(pids)

    # The postmaster's PID now belongs to a zombie (an exited child of ours, not reaped), as when
    # PID 1 has not reaped the killed postmaster yet.
    zombie = subprocess.Popen(["true"])
    while _state(zombie.pid) != "Z":
        time.sleep(0.01)
    lock = _data_dir(settings) / "postmaster.pid"
    lines = lock.read_text().splitlines()
    lock.write_text("\n".join([str(zombie.pid), *lines[1:]]) + "\n")
    try:
        postgres.start(settings, settings.source_region)
        assert postgres.is_running(settings, settings.source_region)
        assert _has_row(settings, "before-kill")  # crash recovery kept the committed row
        assert _postmaster(settings) != zombie.pid
    finally:
        zombie.wait()


def test_a_backend_still_attached_to_the_killed_servers_memory_blocks_the_start(settings: Settings) -> None:
    pm = _postmaster(settings)
    with psycopg.connect(settings.pg_dsn(), autocommit=True) as conn:
        backend = int(conn.execute("SELECT pg_backend_pid()").fetchone()[0])  # type: ignore[index]
        os.kill(backend, signal.SIGSTOP)  # orphaned by the kill below and still attached
        others = [p for p in [pm, *descendants(pm)] if p != backend]
        for p in others:
            os.kill(p, signal.SIGKILL)
        _gone(others)
        try:
            with pytest.raises(StackError, match="still attached"):
                postgres.clear_stale_lock(_data_dir(settings), timeout=1.0)
            assert (_data_dir(settings) / "postmaster.pid").exists()
        finally:
            os.kill(backend, signal.SIGKILL)
        _gone([backend])
    assert postgres.clear_stale_lock(_data_dir(settings), timeout=30.0)
    postgres.start(settings, settings.source_region)
    assert postgres.is_running(settings, settings.source_region)
