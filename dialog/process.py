"""The dialog worker as a process: rebuild if the store is empty, catch up, follow the log until
SIGTERM/SIGINT, with /metrics on the worker's port.

    python -m dialog.process --region north      (or: regionsync dialog worker --region north)
"""

from __future__ import annotations

import argparse
import logging
import signal
import sys
import time
from collections.abc import Sequence
from typing import Any

import orjson

from dialog import metrics
from dialog.worker import DialogWorker
from regionsync.settings import Settings

log = logging.getLogger(__name__)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m dialog.process", description="run a region's dialog worker (rebuild if empty, then follow the log)")
    parser.add_argument("--region", required=True, help="region whose state store this worker fills")
    parser.add_argument("--no-snapshots", action="store_true", help="do not read or write S3 snapshots")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    return serve(Settings(), args.region, snapshots=not args.no_snapshots)


def serve(settings: Settings, region: str, *, snapshots: bool = True) -> int:
    """Rebuild if the store is empty, catch up, then consume until SIGTERM/SIGINT."""
    worker = DialogWorker.create(settings, region, snapshots=snapshots)
    _serve_metrics(settings, worker)

    def _stop(signum: int, _frame: Any) -> None:
        log.info("signal %d: stopping after this batch", signum)
        worker.stopping.set()

    signal.signal(signal.SIGTERM, _stop)
    signal.signal(signal.SIGINT, _stop)
    try:
        report = worker.rebuild()
        log.info("ready: %s", orjson.dumps(report.to_dict()).decode())
        worker.run()
    finally:
        worker.close()
    return 0


def _serve_metrics(settings: Settings, worker: DialogWorker) -> None:
    """/metrics on the worker's port; the snapshot age starts from the newest snapshot in S3."""
    from regionsync.metrics import serve_metrics

    if worker.snapshots is not None:
        try:
            found, _bad = worker.snapshots.manifests()
            for manifest in found:
                metrics.snapshot_seen(worker.region, manifest.created_ms / 1000)
        except Exception as exc:  # noqa: BLE001 - a metric must not stop the worker
            log.warning("reading snapshot manifests for the age metric: %s", exc)
    metrics.track_snapshot_age(worker.region, since=time.time())
    serve_metrics(settings.metrics_port("dialog", worker.region), settings.serve_host, f"dialog worker {worker.region}")


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
