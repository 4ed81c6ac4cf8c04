"""The regional failover, end to end on the real stack (two regions, each with its own object
store, Postgres and broker).

200 customers talk to the east region's dialog manager (their turns interleaved, at east's
epoch). East's worker, a replicator copying east's dialog and control topics into north
(``python -m cli.replicator --from east --to north``) and north's worker run as their own
processes; both workers are killed with SIGKILL mid-stream. North then loses its state store and
rebuilds from its own newest snapshot (in its own object store) plus the tail of its copy of
east's log; it is promoted through the roles (a new epoch, its cut = what it had received of east,
published on its control topic), and every customer's next message, answered by north, continues
the same conversation. A turn east still accepts after the promotion (it has not heard of it) is
past the cut: both regions set it aside in their conflict report. East comes back on its existing
store: it resumes (applying nothing twice), then learns the promotion from north's control topic
(a replicator from north into east), folds its logs again and ends equal to north. Every session
must equal the state folded directly from the regions' own logs, and every event acknowledged
before the kill must be in north's state.
"""

from __future__ import annotations

import argparse
import random
import sys
import uuid
from collections.abc import Mapping, Sequence
from typing import Any

import orjson
import pytest
from confluent_kafka import Producer

from dialog import cli
from dialog.events import DialogEvent
from dialog.fence import Promotion
from dialog.handlers import BlockCardHandler, InquireOrderHandler
from dialog.kafka_io import Ack, KafkaPublisher, producer_config
from dialog.manager import DialogManager, Reply
from dialog.pg_store import PostgresStore
from dialog.reducer import fold
from dialog.snapshots import SnapshotStore
from dialog.state import SessionState
from dialog.store import TP, Origin, Stats
from mirror.checkpoints import read_all
from regionsync.pgdb import region_dsn
from regionsync.settings import Settings
from serve.roles import RegionRole
from stack import procs, topics

from .helpers import Tools, ends_of, read_log

pytestmark = pytest.mark.integration  # starts real services

# 200, not the 1,000 of the single-broker days: tansu's S3 engine keeps each produced batch (here
# one per turn) as an object, and the reference reads and east's refold read east's log back at
# a few hundred records a second, tens on a machine loaded by other test runs.
SESSIONS = 200


class RecordingPublisher:
    """The manager's publisher, keeping every acknowledgement (delivery report, acks=all)."""

    def __init__(self, inner: KafkaPublisher) -> None:
        self.inner = inner
        self.acks: list[Ack] = []

    def publish(self, events: Sequence[DialogEvent]) -> list[Ack]:
        acks = self.inner.publish(events)
        self.acks.extend(acks)
        return acks


def dialog_manager(publisher: RecordingPublisher, store: PostgresStore, tools: Tools, region: str,
                   epoch: int) -> DialogManager:
    dm = DialogManager(publisher, sessions=store, region=region, epoch=epoch)
    dm.register_handler("inquire_order", InquireOrderHandler(tools.lookup))
    dm.register_handler("block_card", BlockCardHandler(tools.block))
    return dm


def script(i: int) -> list[dict[str, Any]]:
    """Two turns in the east region, the third after the failover to north."""
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


def spawn_worker(settings: Settings, region: str, tag: str, spawned: list[str]) -> procs.Proc:
    proc = procs.spawn(
        settings.state_dir,
        f"dialog-worker-{region}-{tag}",
        [sys.executable, "-m", "dialog.process", "--region", region],
        env=settings.for_region(region).child_env(),
    )
    spawned.append(proc.name)
    return proc


def spawn_replicator(settings: Settings, source: str, target: str, tag: str, spawned: list[str]) -> procs.Proc:
    """The replicator runs in the target region (its settings, its database for the checkpoints)."""
    proc = procs.spawn(
        settings.state_dir,
        f"mirror-{source}-{target}-{tag}",
        [sys.executable, "-m", "cli.replicator", "--from", source, "--to", target],
        env=settings.for_region(target).child_env(),
    )
    spawned.append(proc.name)
    return proc


def at_source(region: str, ends: Mapping[TP, int]) -> dict[Origin, int]:
    """A region's own log positions in source coordinates (what any region's store records of it)."""
    return {(region, p): o for (_t, p), o in ends.items()}


def caught_up(store: PostgresStore, own: Mapping[TP, int], sources: Mapping[Origin, int]) -> bool:
    """The store consumed its own dialog topic to ``own`` and every region's log to ``sources``."""
    offsets, got = store.offsets(), store.sources()
    return all(offsets.get(tp, 0) >= end for tp, end in own.items()) and all(
        got.get(key, 0) >= end for key, end in sources.items())


def copied(settings: Settings, source: str, target: str, ends: Mapping[TP, int]) -> bool:
    """The replicator into ``target`` checkpointed every record of ``source`` below ``ends``."""
    points = read_all(region_dsn(settings, target)).get(source, {})
    return all(points[tp].next_offset >= end for tp, end in ends.items() if tp in points) and set(ends) <= set(points)


def publish_promotion(settings: Settings, region: str, role: RegionRole, promo: Promotion) -> None:
    """What the region service does after recording its promotion (serve/region.py): the control
    record on the region's own control topic, then marked published."""
    producer = Producer(producer_config(settings.for_region(region)))
    errors: list[object] = []
    producer.produce(settings.control_topic, key=promo.key(), value=promo.to_json(), partition=0,
                     on_delivery=lambda err, _msg: errors.append(err) if err is not None else None)
    assert producer.flush(30) == 0 and not errors
    role.mark_published(promo)


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
    east_s, north_s = settings.for_region("east"), settings.for_region("north")
    topic = settings.dialog_topic
    for region in settings.regions:  # each region's own topics and its copies of the other's
        topics.ensure_topics(settings, region)
    tools = Tools()
    rng = random.Random(42)
    scripts = {i: script(i) for i in range(SESSIONS)}

    # ---- east writes turns (manager in this process, at the epoch its role gives it); east's
    # worker, the replicator east -> north and north's worker each in their own process
    east_role = RegionRole(settings, "east")
    active = east_role.current()
    assert (active.region, active.epoch) == ("east", 1)
    east_store = PostgresStore.for_region(settings, "east")
    north_store = PostgresStore.for_region(settings, "north")
    east_proc = spawn_worker(settings, "east", tag, spawned)
    mirror_proc = spawn_replicator(settings, "east", "north", tag, spawned)
    north_proc = spawn_worker(settings, "north", tag, spawned)
    east_pub = RecordingPublisher(KafkaPublisher(east_s))
    east = dialog_manager(east_pub, east_store, tools, "east", active.epoch)
    north_snapshots = SnapshotStore.from_settings(north_s)

    turns = [(r, i) for r in (0, 1) for i in rng.sample(range(SESSIONS), SESSIONS)]
    kill_at = int(len(turns) * 0.6)
    told: dict[str, Reply] = {}
    acked_before_kill: list[Ack] = []
    for n, (r, i) in enumerate(turns):
        if n == kill_at:
            # Mid-stream: both workers have folded part of the log, north's has snapshotted.
            procs.wait_until(lambda: east_store.stats().applied > 0, 120, "east's worker to fold", east_proc)
            procs.wait_until(lambda: bool(north_snapshots.manifests()[0]) and north_store.stats().applied > 0, 60,
                             "a snapshot in north's object store", north_proc)
            acked_before_kill = list(east_pub.acks)
            for proc in (east_proc, north_proc):
                procs.kill9(settings.state_dir, proc.name)
                assert not proc.alive()
        told[scripts[i][r]["session_id"]] = east.process(scripts[i][r])
    east_ends = ends_of(east_pub.acks, topic)
    total_east = sum(east_ends.values())
    assert 0 < east_store.stats().applied < total_east  # the kill really was mid-stream
    assert len(tools.blocked) == SESSIONS // 2

    # ---- north loses its state store (emptied: states, positions, counters) and rebuilds from its
    # own newest snapshot + the tail of its copy of east's log, once the replicator has copied it all
    procs.wait_until(lambda: copied(settings, "east", "north", east_ends), 300, "the copy of east's log", mirror_proc)
    north_store.replace_all([], {}, Stats())
    assert north_store.is_empty()
    parser = argparse.ArgumentParser()
    cli.register(parser.add_subparsers(dest="command"))
    args = parser.parse_args(["dialog", "rebuild", "--region", "north", "--json"])
    assert args.func(args, settings) == 0
    report = orjson.loads(capsys.readouterr().out)
    assert report["source"] == "snapshot" and report["snapshot_id"]
    assert report["snapshot_id"] in {m.snapshot_id for m in north_snapshots.manifests()[0]}
    assert report["sessions_restored"] == SESSIONS
    assert 0 < report["events_replayed"] < total_east
    print(f"\nrebuild report: {report}", file=sys.stderr)

    log_east = read_log(east_s, east_ends)  # the reference: east's own log, read on east's broker
    assert len(log_east) == total_east
    expected = fold(log_east)
    assert_equal_to_the_log({s.session_id: s for s in north_store.all_states()}, expected)
    assert north_store.sources() == at_source("east", east_ends)
    # RPO 0 at the worker's kill: every event acknowledged before it is in north's state.
    assert {a.event_id for a in acked_before_kill} <= {e.event_id for e in log_east}
    for ack in acked_before_kill:
        state = north_store.get(ack.session_id)
        assert state is not None and ack.seq <= state.last_seq and not state.gaps

    # ---- north is promoted: a new epoch, its cut = everything of east it had received
    north_role = RegionRole(settings, "north")
    promo, changed = north_role.promote()
    assert changed and (promo.epoch, promo.region, promo.previous) == (2, "north", "east")
    assert promo.cut == {"east": {p: o for (_t, p), o in east_ends.items()}}
    publish_promotion(settings, "north", north_role, promo)
    assert north_role.unpublished() == [] and north_role.current().region == "north"
    assert east_role.current().region == "east"  # east has not heard of it (nothing copies north's topics yet)

    # ---- north serves: the next message of every customer continues the same conversation
    north_proc = spawn_worker(settings, "north", tag + "b", spawned)
    north_pub = RecordingPublisher(KafkaPublisher(north_s))
    north = dialog_manager(north_pub, north_store, tools, "north", promo.epoch)
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
    north_ends = ends_of(north_pub.acks, topic)

    # ---- east, not knowing, accepts one more turn: past north's cut, set aside everywhere
    late_sid = scripts[0][0]["session_id"]
    before_late = len(east_pub.acks)
    east.process({"session_id": late_sid, "text": "one more thing"})
    late = east_pub.acks[before_late:]
    late_ends = ends_of(late, topic, east_ends)
    assert late and all(a.session_id == late_sid for a in late)

    log_north = read_log(north_s, north_ends)
    total = total_east + len(log_north)
    assert total == total_east + sum(north_ends.values())
    expected = fold(log_east + log_north)  # a session's east events come before its north ones
    assert all(s.origin == "north" and len(s.turns) == 6 for s in expected.values())
    everything = {**at_source("east", late_ends), **at_source("north", north_ends)}
    procs.wait_until(lambda: caught_up(north_store, north_ends, everything), 300, "north to fold everything",
                     north_proc)
    assert north_store.sources() == everything
    assert {tp: o for tp, o in north_store.offsets().items() if tp[0] == topic} == north_ends
    assert_equal_to_the_log({s.session_id: s for s in north_store.all_states()}, expected)
    assert north_store.stats() == Stats(applied=total, fenced=len(late))
    conflicts = north_store.fenced()
    assert sorted((e.origin, e.partition, e.source_offset, e.event_id) for e in conflicts) == sorted(
        ("east", a.partition, a.offset, a.event_id) for a in late)
    assert all((e.epoch, e.fenced_epoch, e.fenced_region) == (1, 2, "north") for e in conflicts)

    # ---- east comes back on its existing store: resumes where its killed worker stopped and
    # applies nothing twice (it has not heard of the promotion: the late turn is folded)
    east_proc = spawn_worker(settings, "east", tag + "b", spawned)
    procs.wait_until(lambda: caught_up(east_store, late_ends, {}), 300, "east to fold its own log", east_proc)
    assert east_store.stats() == Stats(applied=total_east + len(late))  # no duplicates: counted once each
    assert east_store.get(late_sid).last_seq == max(a.seq for a in late)  # type: ignore[union-attr]

    # ---- ... then hears of it from north (a replicator north -> east brings north's control and
    # dialog topics): its store folded past the cut, so it folds its logs again and ends equal
    spawn_replicator(settings, "north", "east", tag, spawned)
    procs.wait_until(lambda: caught_up(east_store, late_ends, everything) and len(east_store.fenced()) == len(late),
                     300, "east to learn the promotion and fold again", east_proc)
    assert east_store.promotions() == north_store.promotions() == [promo]
    assert east_role.current().region == "north"
    assert_equal_to_the_log({s.session_id: s for s in east_store.all_states()}, expected)
    assert east_store.stats() == Stats(applied=total, fenced=len(late))
    assert sorted(e.event_id for e in east_store.fenced()) == sorted(e.event_id for e in conflicts)

    for name in spawned:
        assert procs.stop(settings.state_dir, name, timeout=20) or name in (
            f"dialog-worker-east-{tag}", f"dialog-worker-north-{tag}")  # those two were killed
    for store in (east_store, north_store):
        store.close()
    for role in (east_role, north_role):
        role.close()
