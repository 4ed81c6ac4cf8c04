"""`regionsync stack up; stack down; stack up` on a fresh state dir: a user's second run.

The first run of the embedded stack used to leave the Postgres data dir at 0701 after `stack
down`, and Postgres refuses to start on that ("has invalid permissions"): the second `demo` or
`stack up` failed on every machine.
"""

from __future__ import annotations

import shutil
import stat
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

import orjson
import pytest

from regionsync.settings import Settings
from regionsync.stack import postgres, procs, stack

pytestmark = pytest.mark.integration


@pytest.fixture()
def settings() -> Iterator[Settings]:
    # Not under pytest's tmp_path: a new pytest session chmods /tmp/pytest-of-USER to 0700, and the
    # postgres user must reach its data dir (see tests/dialog/conftest.py).
    state_dir = Path(tempfile.mkdtemp(prefix="regionsync-restart-tests-"))
    s = Settings(
        state_dir=state_dir,
        pg_port=procs.free_port(),
        kafka_bootstrap=f"127.0.0.1:{procs.free_port()}",
        connect_url=f"http://127.0.0.1:{procs.free_port()}",
        s3_endpoint=f"http://127.0.0.1:{procs.free_port()}",
        milvus_uris={"east": f"http://127.0.0.1:{procs.free_port()}", "north": f"http://127.0.0.1:{procs.free_port()}"},
    )
    try:
        yield s
    finally:
        stack.down(s)
        shutil.rmtree(state_dir, ignore_errors=True)


def cli(settings: Settings, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "regionsync.cli", *args],
        capture_output=True, text=True, env=settings.child_env(), timeout=300,
    )


def _mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def _assert_all_up(info: dict) -> None:
    assert info["postgres"]["up"] and info["kafka"]["up"] and info["s3"]["up"]
    assert info["connect"]["up"] and info["connect"]["connector"] == "RUNNING"
    assert all(r["milvus_up"] and r["indexer_running"] for r in info["regions"].values()), info["regions"]


def test_stack_down_then_up_again_works_and_keeps_the_data_dir_private(settings: Settings) -> None:
    first = cli(settings, "stack", "up", "--json")
    assert first.returncode == 0, first.stderr[-3000:]
    _assert_all_up(orjson.loads(first.stdout))
    ddir = postgres.data_dir(settings)

    down = cli(settings, "stack", "down")
    assert down.returncode == 0, down.stderr[-3000:]
    assert _mode(ddir) in (0o700, 0o750), oct(_mode(ddir))
    assert not postgres.is_running(settings)

    second = cli(settings, "stack", "up", "--json")
    assert second.returncode == 0, second.stderr[-3000:]
    _assert_all_up(orjson.loads(second.stdout))
    assert _mode(ddir) in (0o700, 0o750), oct(_mode(ddir))


def test_postgres_starts_on_a_data_dir_an_older_version_left_at_0701(settings: Settings) -> None:
    postgres.start(settings)
    postgres.stop(settings)
    ddir = postgres.data_dir(settings)
    ddir.chmod(0o701)  # what stop() used to do

    postgres.start(settings)
    try:
        assert postgres.is_running(settings)
        assert _mode(ddir) == 0o700
    finally:
        postgres.stop(settings)
