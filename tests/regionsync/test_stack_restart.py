"""`regionsync stack up; stack down; stack up` on a fresh state dir: a user's second run.

The first run of the embedded stack used to leave the Postgres data dir at 0701 after `stack
down`, and Postgres refuses to start on that ("has invalid permissions"): the second `demo` or
`stack up` failed on every machine.
"""

from __future__ import annotations

import stat
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import orjson
import pytest

from regionsync.settings import Settings
from regionsync.stack import postgres, stack
from tests.e2e.conftest import e2e_settings
from tests.state_dirs import private_state_dir

pytestmark = pytest.mark.integration


@pytest.fixture()
def settings() -> Iterator[Settings]:
    # Not under pytest's tmp_path (see tests/state_dirs.py); every port free, the region services',
    # the workers' metrics and Prometheus's included: other stacks run on this machine.
    with private_state_dir("restart-tests") as state:
        s = e2e_settings(state)
        try:
            yield s
        finally:
            stack.down(s)


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
    assert info["prometheus"]["up"] and all(info["workers"].values()), info["workers"]
    for r in info["regions"].values():
        assert r["milvus_up"] and r["indexer_running"] and r["service_running"], info["regions"]
    assert sorted(r["role"] for r in info["regions"].values()) == ["active", "standby"]


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

    # The text a user reads names every process: Prometheus, the dialog workers, each region's service.
    text = cli(settings, "stack", "status")
    assert text.returncode == 0, text.stderr[-3000:]
    lines = text.stdout.splitlines()
    words = [line.split() for line in lines]
    assert ["prometheus", f"http://127.0.0.1:{settings.prometheus_port}", "up=True"] in words
    for region in settings.regions:
        assert [f"dialog-{region}", "running=True"] in words
        service = [line for line in lines if line.split()[0] == f"serve-{region}"]
        assert len(service) == 1 and settings.serve_url(region) in service[0] and "running=True" in service[0]
        assert "ready=" in service[0] and ("role=active" in service[0] or "role=standby" in service[0])
    assert settings.pg_password.get_secret_value() not in text.stdout + text.stderr


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
