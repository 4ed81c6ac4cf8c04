"""When a region's dialog worker writes a snapshot, and how many it keeps.

A snapshot is due every ``dialog_snapshot_every_events`` changes or ``dialog_snapshot_every_s``
seconds with a change. After each, all but the newest ``dialog_snapshot_retention`` are pruned,
except after an erasure: then only the newest stays, since an older one still holds what the
erased session was (dialog/keys.py). A write or a pruning that fails is tried again at the next
trigger, never stops the worker: the state store is the truth, a snapshot only a shortcut.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable, Mapping

from dialog import metrics
from dialog.errors import SnapshotError
from dialog.snapshots import Manifest, SnapshotStore
from dialog.state import SessionState
from dialog.store import TP, Origin, Stats
from regionsync.settings import Settings

log = logging.getLogger(__name__)


class SnapshotSchedule:
    def __init__(self, settings: Settings, region: str, snapshots: SnapshotStore | None,
                 clock: Callable[[], float]) -> None:
        self.settings, self.region, self.snapshots = settings, region, snapshots
        self._clock = clock
        self.changes = 0  # changed sessions (and set-aside or dead-lettered records) since the last snapshot
        self._last = clock()
        self._erasure_pending = False  # an erasure's snapshot and pruning are still due

    def due(self) -> bool:
        if self.snapshots is None or self.changes == 0:
            return False
        return (self.changes >= self.settings.dialog_snapshot_every_events
                or self._clock() - self._last >= self.settings.dialog_snapshot_every_s)

    def failed(self, exc: SnapshotError) -> None:
        log.error("%s; will retry at the next trigger", exc)
        self.changes, self._last = 0, self._clock()

    def erased(self) -> None:
        """Sessions were erased: the next snapshot prunes all but itself (and one is due now)."""
        self._erasure_pending = True
        self.changes = max(self.changes, 1)

    def write(self, states: Iterable[SessionState], positions: Mapping[TP, int], stats: Stats,
              sources: Mapping[Origin, int], folded: Mapping[Origin, int]) -> Manifest:
        """Write a snapshot of these committed states and positions, then prune old ones."""
        if self.snapshots is None:
            raise SnapshotError("this worker has no snapshot store")
        manifest = self.snapshots.write(states, positions, stats, self.region, sources=sources, folded=folded)
        metrics.snapshot_seen(self.region, manifest.created_ms / 1000)
        self.changes, self._last = 0, self._clock()
        keep = 1 if self._erasure_pending else self.settings.dialog_snapshot_retention
        try:
            self.snapshots.prune(keep)
            self._erasure_pending = False
        except Exception as exc:  # noqa: BLE001 - pruning is housekeeping: never stop the worker for it
            log.warning("snapshot pruning failed: %s", exc)
        return manifest
