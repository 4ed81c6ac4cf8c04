"""Snapshots in S3 (moto's server over HTTP): atomic manifest, verification, fallback, retention."""

from __future__ import annotations

import itertools
import random

import pytest

from dialog.loadgen import conversation
from dialog.reducer import fold
from dialog.snapshots import SnapshotStore, s3_client
from dialog.state import SessionState
from dialog.store import Stats
from regionsync.settings import Settings


def states(n: int, seed: int) -> list[SessionState]:
    rng = random.Random(seed)
    return list(fold(e for i in range(n) for e in conversation(f"s{i}", rng)).values())


@pytest.fixture
def snaps(settings: Settings) -> SnapshotStore:
    clock = itertools.count(1_700_000_000, 1)  # seconds; one snapshot per "second"
    store = SnapshotStore(
        s3_client(settings), settings.s3_bucket, settings.dialog_snapshot_prefix, settings.dialog_topic,
        clock=lambda: float(next(clock)),
    )  # fmt: skip
    store.ensure_bucket()
    return store


def test_write_then_load_returns_exactly_what_was_written(snaps: SnapshotStore) -> None:
    written = states(300, seed=1)
    manifest = snaps.write(written, {0: 40, 1: 41}, Stats(applied=81, gaps=1), region="east")
    loaded = snaps.load_latest()
    assert loaded.skipped == () and loaded.snapshot is not None
    assert loaded.snapshot.manifest == manifest
    assert loaded.snapshot.states == written
    assert manifest.offsets == {0: 40, 1: 41} and manifest.sessions == 300


def test_newest_is_the_furthest_position_not_the_latest_clock(snaps: SnapshotStore) -> None:
    ahead = snaps.write(states(3, 1), {0: 500}, Stats(), region="east")
    snaps.write(states(3, 2), {0: 100}, Stats(), region="north")  # later clock, older position
    loaded = snaps.load_latest()
    assert loaded.snapshot is not None and loaded.snapshot.manifest.snapshot_id == ahead.snapshot_id


def test_a_truncated_snapshot_falls_back_to_the_previous_one(snaps: SnapshotStore) -> None:
    older = snaps.write(states(50, 1), {0: 10}, Stats(applied=10), region="east")
    newer = snaps.write(states(60, 2), {0: 20}, Stats(applied=20), region="east")
    s3 = snaps.s3
    body = s3.get_object(Bucket=snaps.bucket, Key=newer.data_key)["Body"].read()
    s3.put_object(Bucket=snaps.bucket, Key=newer.data_key, Body=body[: len(body) // 2])
    loaded = snaps.load_latest()
    assert loaded.snapshot is not None and loaded.snapshot.manifest == older
    assert loaded.snapshot.states == states(50, 1)
    assert len(loaded.skipped) == 1 and newer.snapshot_id in loaded.skipped[0] and "truncated" in loaded.skipped[0]


def test_a_snapshot_without_manifest_is_invisible_and_a_corrupt_manifest_is_skipped(snaps: SnapshotStore) -> None:
    older = snaps.write(states(5, 1), {0: 10}, Stats(), region="east")
    newer = snaps.write(states(5, 2), {0: 20}, Stats(), region="east")
    s3 = snaps.s3
    s3.delete_object(Bucket=snaps.bucket, Key=snaps.manifest_key(newer.snapshot_id))  # writer died before it
    garbage = snaps.write(states(5, 3), {0: 30}, Stats(), region="east")
    s3.put_object(Bucket=snaps.bucket, Key=snaps.manifest_key(garbage.snapshot_id), Body=b'{"format": 1, "topi')
    loaded = snaps.load_latest()
    assert loaded.snapshot is not None and loaded.snapshot.manifest == older
    assert len(loaded.skipped) == 1 and "unreadable manifest" in loaded.skipped[0]


def test_data_that_does_not_match_its_manifest_is_never_loaded(snaps: SnapshotStore) -> None:
    only = snaps.write(states(5, 1), {0: 10}, Stats(), region="east")
    other = snaps.write(states(7, 2), {0: 5}, Stats(), region="east")
    s3 = snaps.s3
    # Same size, different bytes (a swapped object): the checksum catches it.
    foreign = s3.get_object(Bucket=snaps.bucket, Key=other.data_key)["Body"].read()
    s3.put_object(Bucket=snaps.bucket, Key=only.data_key, Body=foreign)
    s3.delete_object(Bucket=snaps.bucket, Key=other.data_key)  # and a manifest whose data is gone
    loaded = snaps.load_latest()
    assert loaded.snapshot is None and len(loaded.skipped) == 2


def test_retention_prunes_old_snapshots_and_orphans(snaps: SnapshotStore) -> None:
    orphan = snaps.write(states(2, 0), {0: 1}, Stats(), region="east")
    snaps.s3.delete_object(Bucket=snaps.bucket, Key=snaps.manifest_key(orphan.snapshot_id))
    written = [snaps.write(states(2, i), {0: 10 * i}, Stats(), region="east") for i in range(1, 6)]
    deleted = snaps.prune(keep=2)
    manifests, bad = snaps.manifests()
    assert [m.snapshot_id for m in manifests] == [written[4].snapshot_id, written[3].snapshot_id] and bad == []
    assert orphan.data_key in deleted
    remaining_data = {o["Key"] for o in snaps.s3.list_objects_v2(Bucket=snaps.bucket, Prefix=f"{snaps.root}/data/")["Contents"]}
    assert remaining_data == {written[4].data_key, written[3].data_key}
    loaded = snaps.load_latest()
    assert loaded.snapshot is not None and loaded.snapshot.manifest == written[4]
