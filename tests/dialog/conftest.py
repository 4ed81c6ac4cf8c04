"""A real stack for the dialog tests: Postgres, the tansu broker and moto's S3 server, started once
per session on free ports in a private state dir (so this session can run beside others), and a
fresh topic / databases / snapshot prefix per test."""

from __future__ import annotations

import shutil
import tempfile
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from regionsync.settings import Settings
from regionsync.stack import broker, postgres, procs, s3


@pytest.fixture(scope="package")
def stack() -> Iterator[Settings]:
    # Not under pytest's tmp_path: every new pytest session on the machine chmods
    # /tmp/pytest-of-USER to 0700, after which the postgres user can no longer reach its data dir
    # and `pg_ctl stop` fails, leaving the server running.
    state_dir = Path(tempfile.mkdtemp(prefix="regionsync-dialog-tests-"))
    settings = Settings(
        state_dir=state_dir,
        pg_port=procs.free_port(),
        kafka_bootstrap=f"127.0.0.1:{procs.free_port()}",
        s3_endpoint=f"http://127.0.0.1:{procs.free_port()}",
        **procs.free_service_ports(2),  # dialog workers' metrics ports: other stacks may run here
    )
    try:
        postgres.start(settings)
        broker.start(settings)
        s3.start(settings)
        yield settings
    finally:
        s3.stop(settings)
        broker.stop(settings)
        postgres.stop(settings)
        shutil.rmtree(state_dir, ignore_errors=True)


@pytest.fixture
def settings(stack: Settings) -> Settings:
    """The stack's settings with a topic, dead-letter topic, databases and snapshot prefix of this test's own."""
    tag = uuid.uuid4().hex[:8]
    return stack.model_copy(
        update={
            "dialog_topic": f"dialog.events.{tag}",
            "dlq_topic": f"dialog.dlq.{tag}",
            "dialog_database_prefix": f"dialog_{tag}_",
            "dialog_snapshot_prefix": f"snapshots-{tag}",
        }
    )
