"""Row 6 of the bench, and a benchmark of its own (not a test): how fast a standby region gets
its conversations back (dialog rebuild).

    python -m bench.dialog_rebuild --embedded        # starts the region's object store, Postgres and broker
    python -m bench.dialog_rebuild --sessions 10000  # against the configured (running) stack

Everything happens in one region (the source region; ``--region`` picks another), which keeps its
snapshots in its own object store (there is no other region's snapshot to restore from). Steps,
on a topic, databases and snapshot prefix of its own (removed afterwards):
1. publish ``sessions`` synthetic conversations (about 10 events each), interleaved, to the
   region's broker;
2. the region's worker replays the whole log into an empty store (no snapshot): full replay;
3. it writes one snapshot of every session;
4. a tail of new events is published (``tail_fraction`` more sessions);
5. the region loses its state store (a new, empty database) and restores from its snapshot, then
   replays the tail: time to restore.

Rebuild times include the end-of-log detection (``dialog_idle_polls`` x ``dialog_poll_timeout_s``,
0.5 s by default; see dialog/worker.py for why it is needed on tansu).
"""

from __future__ import annotations

import argparse
import logging
import random
import sys
import tempfile
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import orjson
import psycopg

from dialog.kafka_io import KafkaPublisher, ensure_topic
from dialog.keys import PostgresKeyRing
from dialog.loadgen import conversation, interleave
from dialog.snapshots import s3_client
from dialog.worker import DialogWorker
from regionsync.kafka import new_admin
from regionsync.pgdb import region_dsn
from regionsync.settings import Settings
from stack import broker, postgres, procs, seaweed

log = logging.getLogger(__name__)


def run(settings: Settings, sessions: int = 10_000, tail_fraction: float = 0.1, seed: int = 1,
        region: str | None = None) -> dict[str, Any]:
    """Run the benchmark against a running region (default: the source region); returns the
    figures (see the module docstring)."""
    region = region or settings.source_region
    s = _bench_settings(settings, region)
    # Step 5's store: the same region's database under another name (the lost one stays behind).
    lost = s.model_copy(update={"dialog_database_prefix": f"{s.dialog_database_prefix}restored_"})
    rng = random.Random(seed)
    events = interleave([conversation(f"bench-{i:06d}", rng) for i in range(sessions)], rng)
    n_tail = max(1, int(sessions * tail_fraction))
    tail = interleave([conversation(f"bench-tail-{i:06d}", rng) for i in range(n_tail)], rng)

    ensure_topic(s, s.dialog_topic)
    publisher = KafkaPublisher(s, config={"linger.ms": 5, "batch.num.messages": 10000})
    try:
        t0 = time.monotonic()
        publisher.publish(events, timeout=300)
        publish_s = time.monotonic() - t0

        first = DialogWorker.create(s, region)
        try:
            full = rebuild_without_snapshot(first)
            t0 = time.monotonic()
            manifest = first.snapshot_now()
            snapshot_s = time.monotonic() - t0
        finally:
            first.close()

        publisher.publish(tail, timeout=300)
        again = DialogWorker.create(lost, region)
        try:
            restore = again.rebuild()
            restored = again.store.count()
        finally:
            again.close()
    finally:
        publisher.close()
        _cleanup(s, region, [s.dialog_database(region), lost.dialog_database(region)])

    if restore.source != "snapshot":
        raise AssertionError(f"the region restored from {restore.source}, expected its snapshot")
    if restored != sessions + n_tail:
        raise AssertionError(f"the region restored {restored} sessions, expected {sessions + n_tail}")
    return {
        "region": region,
        "sessions": sessions,
        "events": len(events),
        "publish_events_per_s": round(len(events) / publish_s),
        "full_replay_s": full["seconds"],
        "full_replay_events_per_s": round(len(events) / full["seconds"]),
        "snapshot_write_s": round(snapshot_s, 3),
        "snapshot_bytes": manifest.size,
        "restore_sessions": restored,
        "restore_tail_events": restore.events_replayed,
        "restore_snapshot_load_s": restore.restore_seconds,
        "restore_total_s": restore.seconds,
        "end_detection_s": round(s.dialog_idle_polls * s.dialog_poll_timeout_s, 3),
    }


def _bench_settings(settings: Settings, region: str) -> Settings:
    """The region's settings with a topic, databases and snapshot prefix of the bench's own."""
    tag = uuid.uuid4().hex[:8]
    return settings.for_region(region).model_copy(
        update={
            "dialog_topic": f"regionsync.dialog.bench-{tag}",
            "dialog_database_prefix": f"dialog_bench_{tag}_",
            "dialog_snapshot_prefix": f"bench-{tag}",
            "dialog_snapshot_every_events": 10**12,  # only the explicit snapshot of step 3
            "dialog_snapshot_every_s": 10.0**9,
        }
    )


def sealed_replay(settings: Settings, sessions: int, seed: int = 1, region: str | None = None) -> dict[str, Any]:
    """Step 2 again with every event sealed as the region service writes it (dialog/sealing.py):
    the keys made in the region's database as the events are published, then a full replay that
    opens every payload. Against :func:`run`'s plain replay: what sealing costs a rebuild."""
    region = region or settings.source_region
    s = _bench_settings(settings, region)
    rng = random.Random(seed)
    events = interleave([conversation(f"bench-{i:06d}", rng) for i in range(sessions)], rng)
    ensure_topic(s, s.dialog_topic)
    ring = PostgresKeyRing(region_dsn(s, region))
    publisher = KafkaPublisher(s, config={"linger.ms": 5, "batch.num.messages": 10000}, keys=ring, region=region)
    try:
        t0 = time.monotonic()
        publisher.publish(events, timeout=600)
        publish_s = time.monotonic() - t0
        worker = DialogWorker.create(s, region, snapshots=False)
        try:
            full = rebuild_without_snapshot(worker)
            unopened = worker.store.stats().unopened
        finally:
            worker.close()
    finally:
        publisher.close()
        ring.close()
        _cleanup(s, region, [s.dialog_database(region)])
    if unopened:
        raise AssertionError(f"{unopened} sealed events did not open during the replay")
    return {"events": len(events), "publish_events_per_s": round(len(events) / publish_s),
            "full_replay_s": full["seconds"], "full_replay_events_per_s": round(len(events) / full["seconds"])}


def measure(settings: Settings, sessions: int) -> dict[str, Any] | None:
    """Row 6's figures on the bench's stack (None with fewer than two regions)."""
    if len(settings.regions) < 2:
        return None
    started = time.monotonic()
    figures = dict(run(settings, sessions=sessions))
    sealed = sealed_replay(settings, sessions)
    figures["sealed_publish_events_per_s"] = sealed["publish_events_per_s"]
    figures["sealed_full_replay_events_per_s"] = sealed["full_replay_events_per_s"]
    figures["sealed_over_plain_replay"] = round(sealed["full_replay_events_per_s"] / figures["full_replay_events_per_s"], 2)
    figures["bench_seconds"] = round(time.monotonic() - started, 1)
    return figures


def rebuild_without_snapshot(worker: DialogWorker) -> dict[str, float]:
    # The store is empty and the bench prefix holds no snapshot yet: a full replay.
    report = worker.rebuild()
    if report.source != "full replay":
        raise AssertionError(f"expected a full replay, got {report.source}")
    return {"seconds": report.seconds}


def _cleanup(settings: Settings, region: str, databases: list[str]) -> None:
    """Drop the bench's databases (on the region's server), snapshots (in its object store) and
    topic (on its broker). ``settings`` are the region's (:meth:`Settings.for_region`)."""
    try:
        with psycopg.connect(settings.pg_dsn("postgres"), autocommit=True) as conn:
            for database in databases:
                conn.execute(f'DROP DATABASE IF EXISTS "{database}" WITH (FORCE)')
        s3 = s3_client(settings.object_store())
        listed = s3.list_objects_v2(Bucket=settings.s3_bucket, Prefix=f"{settings.dialog_snapshot_prefix}/")
        for obj in listed.get("Contents", ()):
            s3.delete_object(Bucket=settings.s3_bucket, Key=obj["Key"])
        admin = new_admin(settings.kafka().client())
        for future in admin.delete_topics([settings.dialog_topic]).values():
            future.result(15)
    except Exception as exc:  # noqa: BLE001 - leftovers of a benchmark are not worth failing it
        log.warning("bench cleanup of region %s incomplete: %s", region, exc)


def _embedded_stack(state_dir: Path, region: str | None = None) -> tuple[Settings, Callable[[], None]]:
    """A region's (default: the source region's) object store, Postgres and broker on free ports
    (the broker keeps its log in the object store, so that starts first)."""

    base = Settings()
    ports: dict[str, Any] = procs.free_infra_ports(list(base.regions), base.source_region or None)
    settings = Settings(state_dir=state_dir, **ports)
    region = region or settings.source_region
    started: list[Callable[[Settings, str], object]] = []
    try:
        for part in (seaweed, postgres, broker):
            part.start(settings, region)
            started.append(part.stop)
    except BaseException:
        for stop in reversed(started):
            stop(settings, region)
        raise

    def stop_all() -> None:
        for stop in reversed(started):
            stop(settings, region)

    return settings, stop_all


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.dialog_rebuild", description="dialog rebuild benchmark")
    parser.add_argument("--sessions", type=int, default=10_000)
    parser.add_argument("--embedded", action="store_true",
                        help="start a private object store (SeaweedFS), Postgres and broker (tansu) for the region")
    parser.add_argument("--region", default=None, help="region to run in (default: the source region)")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    stop = None
    tmp = None
    if args.embedded:
        tmp = tempfile.TemporaryDirectory(prefix="dialog-bench-")
        settings, stop = _embedded_stack(Path(tmp.name), args.region)
    else:
        settings = Settings()
    try:
        figures = run(settings, sessions=args.sessions, region=args.region)
    finally:
        if stop:
            stop()
        if tmp:
            tmp.cleanup()
    if args.json:
        sys.stdout.write(orjson.dumps(figures, option=orjson.OPT_INDENT_2).decode() + "\n")
    else:
        width = max(map(len, figures))
        for key, value in figures.items():
            print(f"{key:<{width}}  {value}")
    return 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
