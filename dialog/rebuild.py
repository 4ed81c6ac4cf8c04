"""Failover rebuild: bring a region's state store up to the end of the session-event log.

* Store already has positions: resume from them (nothing to restore).
* Store empty: load the newest snapshot that verifies (falling back to older ones, saying why),
  write its states and positions into the store in one transaction, then replay the log from
  those positions to the end. No usable snapshot: replay the whole log.

Either way the result equals folding the whole log: the snapshot is only a shortcut. The report
says which path was taken, how many sessions are in the store and how many events were replayed.

Who does what: :func:`restore` is the first step (store and snapshots only, no Kafka);
:func:`rebuild` runs the whole rebuild on anything that can start and fold the log to its end
(the dialog worker, :class:`Follower`): restore, then catch up, then the :class:`RebuildReport`.
This module does not import the worker.
"""

from __future__ import annotations

import logging
import time
from dataclasses import asdict, dataclass
from typing import Any, Protocol

from dialog.snapshots import SnapshotStore
from dialog.store import TP, StateStore

log = logging.getLogger(__name__)

SNAPSHOT, FULL_REPLAY, EXISTING_STORE = "snapshot", "full replay", "existing store"


@dataclass(frozen=True)
class RebuildReport:
    region: str
    source: str  # "snapshot" | "full replay" | "existing store"
    snapshot_id: str | None
    skipped_snapshots: tuple[str, ...]
    sessions_restored: int  # sessions in the store after the rebuild
    sessions_from_snapshot: int
    events_replayed: int  # log records consumed after the restore point
    seconds: float
    restore_seconds: float  # of which: reading the snapshot and loading it into the store
    positions: dict[str, int]  # "topic[partition]" -> next offset

    @property
    def events_per_second(self) -> float:
        return self.events_replayed / self.seconds if self.seconds > 0 else 0.0

    def to_dict(self) -> dict[str, Any]:
        out = asdict(self)
        out["skipped_snapshots"] = list(self.skipped_snapshots)
        out["positions"] = dict(self.positions)
        out["events_per_second"] = round(self.events_per_second, 1)
        return out


@dataclass(frozen=True)
class Restored:
    source: str  # SNAPSHOT | FULL_REPLAY | EXISTING_STORE: where folding the log starts from
    snapshot_id: str | None = None
    skipped: tuple[str, ...] = ()  # newer snapshots that did not verify
    sessions: int = 0  # sessions loaded from the snapshot


def restore(store: StateStore, snapshots: SnapshotStore | None, region: str) -> Restored:
    """Fill an empty ``store`` from the newest usable snapshot (states and positions in one
    transaction); a store that has positions, or no usable snapshot, is left as it is."""
    if not store.is_empty():
        return Restored(EXISTING_STORE)
    if snapshots is None:
        return Restored(FULL_REPLAY)
    loaded = snapshots.load_latest(promotions=store.promotions())
    if loaded.snapshot is None:
        if loaded.skipped:
            log.warning("region %s: no usable snapshot (%d skipped): replaying the whole log", region, len(loaded.skipped))
        else:
            log.info("region %s: no snapshot yet: replaying the whole log", region)
        return Restored(FULL_REPLAY, skipped=loaded.skipped)
    snap = loaded.snapshot
    store.replace_all(snap.states, snap.manifest.offsets, snap.manifest.stats, snap.manifest.sources,
                      snap.manifest.folded)
    log.info(
        "region %s: restored %d sessions from snapshot %s%s",
        region,
        len(snap.states),
        snap.manifest.snapshot_id,
        f" after skipping {len(loaded.skipped)} newer unusable ones" if loaded.skipped else "",
    )
    return Restored(SNAPSHOT, snap.manifest.snapshot_id, loaded.skipped, len(snap.states))


class Follower(Protocol):
    """What :func:`rebuild` needs of a worker."""

    region: str
    store: StateStore
    snapshots: SnapshotStore | None

    def start(self) -> None: ...

    def catch_up(self) -> int: ...

    @property
    def positions(self) -> dict[TP, int]: ...


def rebuild(worker: Follower) -> RebuildReport:
    """Restore the worker's store if it is empty (:func:`restore`: the newest usable snapshot, or
    nothing), start the worker, and fold the log to its end; report how."""
    t0 = time.monotonic()
    restored = restore(worker.store, worker.snapshots, worker.region)
    t_restored = time.monotonic()
    worker.start()
    replayed = worker.catch_up()
    report = RebuildReport(
        region=worker.region,
        source=restored.source,
        snapshot_id=restored.snapshot_id,
        skipped_snapshots=restored.skipped,
        sessions_restored=worker.store.count(),
        sessions_from_snapshot=restored.sessions,
        events_replayed=replayed,
        seconds=round(time.monotonic() - t0, 3),
        restore_seconds=round(t_restored - t0, 3),
        positions={f"{t}[{p}]": o for (t, p), o in sorted(worker.positions.items())},
    )
    log.info("region %s rebuilt from %s: %d sessions, %d events replayed in %.2fs",
             worker.region, restored.source, report.sessions_restored, replayed, report.seconds)
    return report
