"""The regional failover, end to end on the real stack.

1,000 customers talk to the east region's dialog manager (their turns interleaved); east's
worker runs as its own process and is killed with SIGKILL mid-stream. The north region, with an
empty state store, rebuilds from the newest S3 snapshot plus the log's tail, and every
customer's next message, answered by north, continues the same conversation. Every session in
north (and in east, restarted on its existing store) must equal the state folded directly from
the whole log, and every event acknowledged before the kill must be in it.
"""

from __future__ import annotations

import argparse
import random
import sys
import uuid
from collections.abc import Iterator, Sequence
from typing import Any

import orjson
import pytest

from dialog import cli
from dialog.events import DialogEvent
from dialog.handlers import BlockCardHandler, InquireOrderHandler
from dialog.kafka_io import Ack, KafkaPublisher, ensure_topic
from dialog.manager import DialogManager, Reply
from dialog.snapshots import SnapshotStore
from dialog.state import SessionState
from dialog.store import PostgresStore, Stats
from regionsync.settings import Settings
from regionsync.stack import procs

from .helpers import Tools, ends_of, fold_log

SESSIONS = 1000


class RecordingPublisher:
    """The manager's publisher, keeping every acknowledgement (delivery report, acks=all)."""

    def __init__(self, inner: KafkaPublisher) -> None:
        self.inner = inner
        self.acks: list[Ack] = []

    def publish(self, events: Sequence[DialogEvent]) -> list[Ack]:
        acks = self.inner.publish(events)
        self.acks.extend(acks)
        return acks


def dialog_manager(publisher: RecordingPublisher, store: PostgresStore, tools: Tools, region: str) -> DialogManager:
    dm = DialogManager(publisher, sessions=store, region=region)
    dm.register_handler("inquire_order", InquireOrderHandler(tools.lookup))
    dm.register_handler("block_card", BlockCardHandler(tools.block))
    return dm


def script(i: int) -> list[dict[str, Any]]:
    """Two turns in the primary region, the third after the failover."""
    sid = f"cust-{i:04d}"
    if i % 2 == 0:
        turns: list[dict[str, Any]] = [
            {"text": "where is my order?", "intent": "inquire_order"},
            {"text": "it is A-1", "slots": {"order_id": "A-1"}},
            {"text": "and B-2?", "slots": {"order_id": "B-2"}},
        ]
    else:
        turns = [
            {"text": "block my card", "intent": "block_card", "slots": {"card_last4": f"{i:04d}"}},
            {"text": "yes"},
            {"text": "is it blocked now?"},
        ]
    return [{**t, "session_id": sid} for t in turns]


@pytest.fixture
def spawned(settings: Settings) -> Iterator[list[str]]:
    """Names of the worker processes a test started: stopped even if the test fails."""
    names: list[str] = []
    yield names
    for name in names:
        procs.stop(settings.state_dir, name, timeout=10)


def spawn_worker(settings: Settings, region: str, tag: str, spawned: list[str]) -> procs.Proc:
    proc = procs.spawn(
        settings.state_dir,
        f"dialog-worker-{region}-{tag}",
        [sys.executable, "-m", "dialog.worker", "--region", region],
        env=settings.child_env(),
    )
    spawned.append(proc.name)
    return proc


def wait_caught_up(store: PostgresStore, ends: dict[int, int], proc: procs.Proc, timeout: float = 60) -> None:
    procs.wait_until(lambda: store.offsets() == ends, timeout, f"worker {proc.name} to reach {ends}", proc)


def assert_equal_to_the_log(stored: dict[str, SessionState], expected: dict[str, SessionState]) -> None:
    assert len(stored) == len(expected) == SESSIONS
    different = [sid for sid in expected if stored.get(sid) != expected[sid]]
    assert different == [], f"{len(different)} sessions differ from the log, e.g. {different[:3]}"


def test_failover_rebuilds_every_session_and_conversations_continue(
    settings: Settings, capsys: pytest.CaptureFixture[str], spawned: list[str]
) -> None:
    tag = uuid.uuid4().hex[:6]
    settings = settings.model_copy(
        update={"dialog_snapshot_every_events": 1500, "dialog_snapshot_every_s": 2.0, "dialog_batch_max_events": 500,
                "dialog_catchup_batch_events": 500}
    )
    ensure_topic(settings, settings.dialog_topic)
    tools = Tools()
    rng = random.Random(42)
    scripts = {i: script(i) for i in range(SESSIONS)}

    # ---- the primary region: manager in this process, worker in its own
    east_store = PostgresStore.for_region(settings, "east")
    east_proc = spawn_worker(settings, "east", tag, spawned)
    east_pub = RecordingPublisher(KafkaPublisher(settings))
    east = dialog_manager(east_pub, east_store, tools, "east")
    snapshots = SnapshotStore.from_settings(settings)

    turns = [(r, i) for r in (0, 1) for i in rng.sample(range(SESSIONS), SESSIONS)]
    kill_at = int(len(turns) * 0.6)
    told: dict[str, Reply] = {}
    acked_before_kill: list[Ack] = []
    for n, (r, i) in enumerate(turns):
        if n == kill_at:
            # Mid-stream: the worker has applied part of the log and snapshotted at least once.
            procs.wait_until(
                lambda: bool(snapshots.manifests()[0]) and east_store.stats().applied > 0, 60, "a snapshot", east_proc
            )
            acked_before_kill = list(east_pub.acks)
            procs.kill9(settings.state_dir, east_proc.name)
            assert not east_proc.alive()
        told[scripts[i][r]["session_id"]] = east.process(scripts[i][r])
    east_ends = ends_of(east_pub.acks)
    total_east = sum(east_ends.values())
    applied_at_kill = east_store.stats().applied
    assert 0 < applied_at_kill < total_east  # the kill really was mid-stream
    assert len(tools.blocked) == SESSIONS // 2

    # ---- the standby region: empty store, rebuild from the newest snapshot + the log's tail
    parser = argparse.ArgumentParser()
    cli.register(parser.add_subparsers(dest="command"))
    args = parser.parse_args(["dialog", "rebuild", "--region", "north", "--json"])
    assert args.func(args, settings) == 0
    report = orjson.loads(capsys.readouterr().out)
    assert report["source"] == "snapshot" and report["snapshot_id"]
    assert report["sessions_restored"] == SESSIONS
    assert 0 < report["events_replayed"] < total_east
    print(f"\nrebuild report: {report}", file=sys.stderr)

    north_store = PostgresStore.for_region(settings, "north")
    expected, log_events = fold_log(settings, east_ends)
    assert len(log_events) == total_east
    assert_equal_to_the_log({s.session_id: s for s in north_store.all_states()}, expected)
    # RPO 0: every event acknowledged before the kill is in north's state.
    logged_ids = {e.event_id for e in log_events}
    assert {a.event_id for a in acked_before_kill} <= logged_ids
    for ack in acked_before_kill:
        state = north_store.get(ack.session_id)
        assert state is not None and ack.seq <= state.last_seq and not state.gaps

    # ---- north serves: the next message of every customer continues the same conversation
    north_proc = spawn_worker(settings, "north", tag, spawned)
    north_pub = RecordingPublisher(KafkaPublisher(settings))
    north = dialog_manager(north_pub, north_store, tools, "north")
    for i in rng.sample(range(SESSIONS), SESSIONS):
        msg = scripts[i][2]
        before = north.state(msg["session_id"])
        reply = north.process(msg)
        assert reply.last_seq > before.last_seq == told[msg["session_id"]].last_seq
        if i % 2:
            # Told "blocked, reference X" by east: north knows it, and does not block again.
            assert told[msg["session_id"]].confirmed and told[msg["session_id"]].confirmed[0] in reply.confirmed
        else:
            assert reply.text == "Order B-2 is packed." and north.state(msg["session_id"]).slots["order_id"] == "B-2"
    assert len(tools.blocked) == SESSIONS // 2 == len(set(tools.blocked))

    all_ends = ends_of(north_pub.acks, east_ends)
    total = sum(all_ends.values())
    wait_caught_up(north_store, all_ends, north_proc)
    expected, log_events = fold_log(settings, all_ends)
    assert len(log_events) == total
    assert_equal_to_the_log({s.session_id: s for s in north_store.all_states()}, expected)
    assert north_store.stats() == Stats(applied=total)
    assert all(s.origin == "north" and len(s.turns) == 6 for s in expected.values())

    # ---- the primary comes back on its existing store: resumes, applies nothing twice
    east_proc = spawn_worker(settings, "east", tag, spawned)
    wait_caught_up(east_store, all_ends, east_proc)
    assert_equal_to_the_log({s.session_id: s for s in east_store.all_states()}, expected)
    assert east_store.stats() == Stats(applied=total)  # no duplicates: counted once each

    for proc in (east_proc, north_proc):
        assert procs.stop(settings.state_dir, proc.name, timeout=20)
    for store in (east_store, north_store):
        store.close()
