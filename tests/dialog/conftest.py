"""A real stack for the dialog tests: each region's object store (SeaweedFS), Postgres and broker
(tansu on that object store), started once per package on free ports in a private state dir (so
this session can run beside others), and a fresh topic / databases / snapshot prefix per test."""

from __future__ import annotations

import uuid
from collections.abc import Iterator

import pytest

from regionsync.settings import Settings
from tests.stacks import free_settings, regions_up, stopped_after
from tests.state_dirs import private_state_dir


@pytest.fixture(scope="package")
def stack() -> Iterator[Settings]:
    # Not under pytest's tmp_path: every new pytest session on the machine chmods
    # /tmp/pytest-of-USER to 0700, after which the postgres user can no longer reach its data dir
    # and `pg_ctl stop` fails, leaving the server running.
    with private_state_dir("dialog-tests") as state, regions_up(free_settings(state), with_topics=False) as settings:
        yield settings


@pytest.fixture
def settings(stack: Settings) -> Settings:
    """The stack's settings with topics, databases and snapshot prefix of this test's own."""
    tag = uuid.uuid4().hex[:8]
    return stack.model_copy(
        update={
            "dialog_topic": f"dialog.events.{tag}",
            "control_topic": f"dialog.control.{tag}",
            "dlq_topic": f"dialog.dlq.{tag}",
            "dialog_database_prefix": f"dialog_{tag}_",
            "dialog_snapshot_prefix": f"snapshots-{tag}",
        }
    )


@pytest.fixture
def spawned(settings: Settings) -> Iterator[list[str]]:
    """Names of the processes a test started: stopped even if the test fails."""
    with stopped_after(settings.state_dir) as names:
        yield names
