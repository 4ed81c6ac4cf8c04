"""Failover rebuild: bring a region's state store up to the end of the session-event log.

* Store already has positions: resume from them (nothing to restore).
* Store empty: load the newest snapshot that verifies (falling back to older ones, saying why),
  write its states and positions into the store in one transaction, then replay the log from
  those positions to the end. No usable snapshot: replay the whole log.

Either way the result equals folding the whole log: the snapshot is only a shortcut. The report
says which path was taken, how many sessions are in the store and how many events were replayed.
"""

from __future__ import annotations

import logging
import time
from dataclasses import asdict, dataclass
from typing import Any

from dialog.worker import DialogWorker

log = logging.getLogger(__name__)


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
    positions: dict[int, int]

    @property
    def events_per_second(self) -> float:
        return self.events_replayed / self.seconds if self.seconds > 0 else 0.0

    def to_dict(self) -> dict[str, Any]:
        out = asdict(self)
        out["skipped_snapshots"] = list(self.skipped_snapshots)
        out["positions"] = {str(p): o for p, o in self.positions.items()}
        out["events_per_second"] = round(self.events_per_second, 1)
        return out


def rebuild(worker: DialogWorker) -> RebuildReport:
    """Restore ``worker``'s store if it is empty, start the worker and catch up to the end."""
    t0 = time.monotonic()
    store = worker.store
    snapshot_id: str | None = None
    skipped: tuple[str, ...] = ()
    from_snapshot = 0
    if not store.is_empty():
        source = "existing store"
    elif worker.snapshots is None:
        source = "full replay"
    else:
        loaded = worker.snapshots.load_latest()
        skipped = loaded.skipped
        if loaded.snapshot is None:
            source = "full replay"
            if skipped:
                log.warning("region %s: no usable snapshot (%d skipped): replaying the whole log", worker.region, len(skipped))
            else:
                log.info("region %s: no snapshot yet: replaying the whole log", worker.region)
        else:
            snap = loaded.snapshot
            store.replace_all(snap.states, snap.manifest.offsets, snap.manifest.stats)
            source, snapshot_id, from_snapshot = "snapshot", snap.manifest.snapshot_id, len(snap.states)
            log.info(
                "region %s: restored %d sessions from snapshot %s%s",
                worker.region,
                from_snapshot,
                snapshot_id,
                f" after skipping {len(skipped)} newer unusable ones" if skipped else "",
            )
    t_restored = time.monotonic()
    worker.start()
    replayed = worker.catch_up()
    report = RebuildReport(
        region=worker.region,
        source=source,
        snapshot_id=snapshot_id,
        skipped_snapshots=skipped,
        sessions_restored=store.count(),
        sessions_from_snapshot=from_snapshot,
        events_replayed=replayed,
        seconds=round(time.monotonic() - t0, 3),
        restore_seconds=round(t_restored - t0, 3),
        positions=worker.positions,
    )
    log.info(
        "region %s rebuilt from %s: %d sessions, %d events replayed in %.2fs",
        worker.region,
        source,
        report.sessions_restored,
        replayed,
        report.seconds,
    )
    return report
