"""The dialog worker's Prometheus metrics (exposed by ``python -m dialog.process`` on
``Settings.metrics_port("dialog", region)``)."""

from __future__ import annotations

import logging
import time

from prometheus_client import Counter, Gauge

from dialog.fold import Fold
from regionsync.metrics import DEAD_LETTERS  # noqa: F401 - one family for every worker (see there)

EVENTS = Counter(
    "regionsync_dialog_events_total", "Session events folded into the region's state store, by outcome",
    ["region", "outcome"],
)
# The store's position was not on the log any more: the log was recreated (a broker that lost its
# data) or retention removed events before they were folded (dialog/logcheck.py, report_moved).
LOG_RESETS = Counter(
    "regionsync_dialog_log_resets_total", "Times a stored dialog-log position was gone from the log, by cause",
    ["region", "cause"],
)
SNAPSHOT_CREATED = Gauge(
    "regionsync_dialog_snapshot_created_timestamp_seconds",
    "Creation time of the newest dialog snapshot this worker knows (0: none yet)",
    ["region"],
)
SNAPSHOT_AGE = Gauge("regionsync_dialog_snapshot_age_seconds", "Age of the newest dialog snapshot", ["region"])

log = logging.getLogger("dialog.worker")  # what the worker did, in its own log

_newest: dict[str, float] = {}  # region -> creation time (s) of the newest snapshot known


def snapshot_seen(region: str, created_s: float) -> None:
    if created_s > _newest.get(region, 0.0):
        _newest[region] = created_s
        SNAPSHOT_CREATED.labels(region).set(created_s)


def track_snapshot_age(region: str, since: float) -> None:
    """Age = now - newest snapshot; with none yet, since ``since`` (the worker's start): a fresh
    region does not page at once, and one that never writes a snapshot grows old."""
    SNAPSHOT_AGE.labels(region).set_function(lambda: time.time() - (_newest.get(region) or since))


def batch_committed(region: str, fold: Fold) -> None:
    """Count a committed batch's outcomes, and say what it set aside or could not open."""
    for outcome, n in fold.outcomes.items():
        EVENTS.labels(region, outcome).inc(n)
    DEAD_LETTERS.labels(f"dialog:{region}").inc(len(fold.dead))
    if fold.fenced:
        log.warning("dialog worker %s: %d events set aside (fenced by a promotion): %s", region,
                    len(fold.fenced), [(e.session_id, e.seq, e.origin) for e in fold.fenced[:5]])
    if fold.unopened:
        log.warning("dialog worker %s: %d events folded without their personal fields (no key for their "
                    "session here: erased, or the key did not reach this region)", region, fold.unopened)
