"""A real stack for the connector tests: the source region's object store, Postgres (wal_level=logical)
and broker (tansu on that object store, with the region's topics), and a Kafka Connect worker running
Debezium, started once per package on free ports in a private state dir, so this session can run
beside others on the same machine. Nothing of the other regions runs: the connector lives in the
source region only."""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import psycopg
import pytest
from confluent_kafka import OFFSET_BEGINNING, Consumer, TopicPartition
from pydantic import SecretStr

from regionsync.settings import Settings
from stack import connect
from tests.stacks import free_settings, start_region, stop_region
from tests.state_dirs import private_state_dir

# Distinctive, so a test can prove it never reaches an output or a log.
PG_PASSWORD = "pw-Int3gration-9c41"


@dataclass
class Stack:
    settings: Settings
    timings: dict[str, float] = field(default_factory=dict)

    def sql(self, statement: str, params: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
        with psycopg.connect(self.settings.pg_dsn(), autocommit=True) as conn:
            cur = conn.execute(statement, params)
            return cur.fetchall() if cur.description else []


@pytest.fixture(scope="package")
def connect_stack() -> Iterator[Stack]:
    with private_state_dir("connect-stack") as state:
        settings = free_settings(state, pg_password=SecretStr(PG_PASSWORD))
        source = settings.source_region
        # The source region's view: its Postgres, broker and object store are the flat values.
        stack = Stack(settings.source())
        try:
            start_region(settings, source)
            started = time.monotonic()
            connect.start(settings)  # in the source region (settings.source())
            stack.timings["worker_rest_up_s"] = time.monotonic() - started
            yield stack
        finally:
            connect.stop(settings)
            stop_region(settings, source)


@dataclass(frozen=True)
class Change:
    """One record of the Debezium topic; ``value`` None is a tombstone."""

    partition: int
    offset: int
    key: dict[str, Any] | None
    value: dict[str, Any] | None
    headers: dict[str, str]


ReadChanges = Callable[[str, Callable[[list[Change]], bool], float], list[Change]]


@pytest.fixture
def read_changes(connect_stack: Stack) -> ReadChanges:
    """``read(document_id, done, timeout)``: the topic's records keyed by that id, from the start,
    until ``done(records)`` is true."""
    settings = connect_stack.settings

    def read(doc_id: str, done: Callable[[list[Change]], bool], timeout: float = 30.0) -> list[Change]:
        consumer = Consumer({
            "bootstrap.servers": settings.kafka_bootstrap,
            "group.id": f"test-{uuid.uuid4()}",
            "enable.auto.commit": False,
            "session.timeout.ms": settings.session_timeout_ms,
            "fetch.wait.max.ms": settings.fetch_wait_max_ms,
        })
        found: list[Change] = []
        try:
            deadline = time.monotonic() + timeout
            partitions: list[int] = []
            while not partitions and time.monotonic() < deadline:
                topic = consumer.list_topics(settings.cdc_topic, timeout=5).topics.get(settings.cdc_topic)
                partitions = sorted(topic.partitions) if topic and not topic.error else []
                if not partitions:
                    time.sleep(0.2)
            consumer.assign([TopicPartition(settings.cdc_topic, p, OFFSET_BEGINNING) for p in partitions])
            while time.monotonic() < deadline:
                msg = consumer.poll(0.2)
                if msg is None or msg.error():
                    continue
                raw_key = msg.key()
                key = json.loads(raw_key) if raw_key is not None else None
                if not key or key.get("id") != doc_id:
                    continue
                raw = msg.value()  # None for a tombstone: test `is None`, a message may be falsy
                headers: dict[str, str] = {}
                for header in msg.headers() or []:
                    name, data = header[0], header[1]
                    headers[str(name)] = data.decode() if isinstance(data, bytes) else str(data or "")
                value = None if raw is None else json.loads(raw)
                found.append(Change(msg.partition() or 0, msg.offset() or 0, key, value, headers))
                if done(found):
                    return found
            raise AssertionError(f"records for {doc_id!r} incomplete after {timeout:.0f}s: {found}")
        finally:
            consumer.close()

    return read
