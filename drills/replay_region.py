"""Replay into a region (drills/replay.py): nothing is copied; the region's consumer is moved back
to the range's start and re-applies from there (every region sink is idempotent).

For the chunks topic that consumer is the region's indexer group; for the dialog topic it is the
region's dialog state store, whose positions are moved, after which the log is folded to its end.
A group's offsets can only be moved while it has no members: a running consumer is refused,
unless the request says to stop it and it is a process of the embedded stack.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from drills import kafka_io, progress
from drills.errors import DrillsError, GroupActive
from drills.ranges import PartitionRange
from regionsync.settings import Settings
from regionsync.settings_parts import KafkaSettings

if TYPE_CHECKING:  # the request and result types live with the orchestration, which calls this
    from drills.replay import ReplayRequest, ReplayResult

log = logging.getLogger(__name__)


def _stack_proc(settings: Settings, name: str) -> Any:
    from stack import procs

    proc = procs.read_proc(settings.state_dir, name)
    return proc if proc is not None and proc.alive() else None


def into_indexer(settings: Settings, req: ReplayRequest, ranges: list[PartitionRange], result: ReplayResult) -> None:
    from stack import procs, stack

    assert req.region is not None
    group = settings.region_group(req.region)
    name = stack.indexer_name(req.region)
    # tansu's DescribeGroups lists no members even for a running group: the embedded stack's
    # process table is asked too.
    members = kafka_io.group_members(settings.kafka(), group) or (1 if _stack_proc(settings, name) else 0)
    stopped = False
    if members:
        if not (req.stop_consumer and _stack_proc(settings, name)):
            raise GroupActive(
                f"region {req.region}'s indexer group {group} has {members} active member(s): stop its indexer first "
                f"(or pass --stop-consumer to stop and restart the embedded stack's indexer)"
            )
        procs.stop(settings.state_dir, name)
        stopped = True
        _wait_empty(settings.kafka(), group)
    offsets = {r.partition: r.start for r in ranges}
    # A stopped consumer's membership can outlive it until the broker's session timeout (tansu:
    # its leave is not always seen), and the commit is refused meanwhile: retry for a while.
    deadline = time.monotonic() + (60.0 if stopped else 0.0)
    while True:
        try:
            kafka_io.move_group(settings.kafka(), group, req.topic, offsets)
            break
        except DrillsError:
            if time.monotonic() > deadline:
                if stopped:
                    stack.start_indexer(settings, req.region)
                raise
            time.sleep(1.0)
    result.moved = offsets
    log.info("moved %s on %s back to %s", group, req.topic, offsets)
    if stopped:
        stack.start_indexer(settings, req.region)
    if req.wait and stopped:
        result.applied_to_end = _wait_committed(settings, group, req.topic, ranges)


def _wait_empty(kafka: KafkaSettings, group: str, timeout_s: float = 60.0) -> None:
    deadline = time.monotonic() + timeout_s
    while kafka_io.group_members(kafka, group):
        if time.monotonic() > deadline:
            raise GroupActive(f"group {group} still has members {timeout_s:.0f}s after its consumer was stopped")
        time.sleep(0.5)


def _wait_committed(
    settings: Settings, group: str, topic: str, ranges: list[PartitionRange], timeout_s: float = 600.0,
    sleep: Callable[[float], None] = time.sleep,
) -> bool:
    """Watch the group's committed offsets pass each range's end (a progress bar meanwhile)."""
    parts = [r.partition for r in ranges]
    total = sum(r.count for r in ranges)
    deadline = time.monotonic() + timeout_s
    with progress.bar(total, f"{group} re-applying", unit="rec") as pbar:
        while True:
            now = kafka_io.committed(settings.kafka(), group, topic, parts)
            done = sum(min(max((now.get(r.partition) or r.start) - r.start, 0), r.count) for r in ranges)
            pbar.n = done
            pbar.refresh()
            if done >= total:
                return True
            if time.monotonic() > deadline:
                return False
            sleep(0.5)


def into_dialog_store(settings: Settings, req: ReplayRequest, ranges: list[PartitionRange], result: ReplayResult) -> None:
    from dialog.worker import DialogWorker
    from stack import procs, stack

    assert req.region is not None
    name = stack.dialog_name(req.region)
    running = _stack_proc(settings, name)
    if running and not req.stop_consumer:
        raise GroupActive(
            f"region {req.region}'s dialog worker is running: stop it first "
            f"(or pass --stop-consumer to stop and restart the embedded stack's dialog worker)"
        )
    if running:
        procs.stop(settings.state_dir, name)
    worker = DialogWorker.create(settings, req.region, snapshots=False)
    try:
        store = worker.store
        positions = store.offsets()
        moved = {(req.topic, r.partition): min(positions.get((req.topic, r.partition), r.start), r.start)
                 for r in ranges}
        # States stay: the reducer skips events a session has folded, so re-reading is harmless.
        store.replace_all(store.all_states(), {**positions, **moved}, store.stats(), store.sources(), store.folded())
        result.moved = {p: o for (_t, p), o in moved.items()}
        report = worker.rebuild()
        result.applied_to_end = True
        log.info("region %s dialog store: %d events folded again, %d sessions", req.region, report.events_replayed,
                 report.sessions_restored)
    finally:
        worker.close()
    if running:
        stack.start_dialog_worker(settings, req.region)
