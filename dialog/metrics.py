"""The dialog worker's Prometheus metrics (exposed by ``python -m dialog.process`` on
``Settings.metrics_port("dialog", region)``)."""

from __future__ import annotations

import time

from prometheus_client import Counter, Gauge

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

_newest: dict[str, float] = {}  # region -> creation time (s) of the newest snapshot known


def snapshot_seen(region: str, created_s: float) -> None:
    if created_s > _newest.get(region, 0.0):
        _newest[region] = created_s
        SNAPSHOT_CREATED.labels(region).set(created_s)


def track_snapshot_age(region: str, since: float) -> None:
    """Age = now - newest snapshot; with none yet, since ``since`` (the worker's start): a fresh
    region does not page at once, and one that never writes a snapshot grows old."""
    SNAPSHOT_AGE.labels(region).set_function(lambda: time.time() - (_newest.get(region) or since))
