"""A real stack for the dialog tests: Postgres, the tansu broker and moto's S3 server, started once
per session on free ports in a private state dir (so this session can run beside others), and a
fresh topic / databases / snapshot prefix per test."""

from __future__ import annotations

import uuid
from collections.abc import Iterator

import pytest

from regionsync.settings import Settings
from regionsync.stack import broker, postgres, procs, s3


@pytest.fixture(scope="session")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Settings]:
    settings = Settings(
        state_dir=tmp_path_factory.mktemp("dialog-stack"),
        pg_port=procs.free_port(),
        kafka_bootstrap=f"127.0.0.1:{procs.free_port()}",
        s3_endpoint=f"http://127.0.0.1:{procs.free_port()}",
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
