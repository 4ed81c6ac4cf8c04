"""The whole embedded stack, once for the drills tests (the same start as tests/e2e)."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Iterator

import psycopg
import pytest

from regionsync.settings import Settings
from tests.e2e.conftest import apply_connector_patiently as apply_connector
from tests.e2e.conftest import e2e_settings, run_stack, wait_for
from tests.state_dirs import private_state_dir

__all__ = ["wait_for", "cli", "apply_connector"]


@pytest.fixture(scope="package")
def settings() -> Iterator[Settings]:
    with private_state_dir("drills-tests") as state:
        yield from run_stack(e2e_settings(state), apply_connector)


@pytest.fixture()
def db(settings: Settings) -> Iterator[psycopg.Connection]:
    with psycopg.connect(settings.pg_dsn(), autocommit=True) as conn:
        yield conn


def cli(settings: Settings, *args: str, timeout: float = 600) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "cli", *args],
        capture_output=True, text=True, env=settings.child_env(), timeout=timeout,
    )
