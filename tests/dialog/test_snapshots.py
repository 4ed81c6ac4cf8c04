"""Snapshots in a region's own object store (SeaweedFS over HTTP): atomic manifest (format 2:
positions per (topic, partition), source positions per (origin, partition)), verification,
fallback, retention, and the skip of a snapshot a promotion fences."""

from __future__ import annotations

import itertools
import random

import orjson
import pytest

from dialog.fence import Promotion
from dialog.loadgen import conversation
from dialog.reducer import fold
from dialog.snapshots import SnapshotStore, s3_client
from dialog.state import SessionState
from dialog.store import TP, Stats
from regionsync.settings import Settings

pytestmark = pytest.mark.integration  # starts real services

TOPIC = "regionsync.dialog.events"
REMOTE = "north.regionsync.dialog.events"


def at(*offsets: int, topic: str = TOPIC) -> dict[TP, int]:
    """Positions on partitions 0.. of one topic."""
    return {(topic, p): o for p, o in enumerate(offsets)}


def states(n: int, seed: int) -> list[SessionState]:
    rng = random.Random(seed)
    return list(fold(e for i in range(n) for e in conversation(f"s{i}", rng)).values())


@pytest.fixture
def snaps(settings: Settings) -> SnapshotStore:
    clock = itertools.count(1_700_000_000, 1)  # seconds; one snapshot per "second"
    store = SnapshotStore(
        s3_client(settings.object_store()), settings.s3_bucket, settings.dialog_snapshot_prefix, settings.dialog_topic,
        clock=lambda: float(next(clock)),
    )  # fmt: skip
    store.ensure_bucket()
    return store


def test_write_then_load_returns_exactly_what_was_written(snaps: SnapshotStore) -> None:
    written = states(300, seed=1)
    manifest = snaps.write(written, {**at(40, 41), (REMOTE, 0): 7}, Stats(applied=81, gaps=1), region="east",
                           sources={("east", 0): 40, ("east", 1): 41, ("north", 0): 9},
                           folded={("east", 0): 40, ("east", 1): 39, ("north", 0): 9})
    loaded = snaps.load_latest()
    assert loaded.skipped == () and loaded.snapshot is not None
    assert loaded.snapshot.manifest == manifest
    assert loaded.snapshot.states == written
    assert manifest.offsets == {(TOPIC, 0): 40, (TOPIC, 1): 41, (REMOTE, 0): 7} and manifest.sessions == 300
    assert manifest.sources == {("east", 0): 40, ("east", 1): 41, ("north", 0): 9}
    assert manifest.folded == {("east", 0): 40, ("east", 1): 39, ("north", 0): 9} and manifest.format == 2


def test_newest_is_the_furthest_position_not_the_latest_clock(snaps: SnapshotStore) -> None:
    ahead = snaps.write(states(3, 1), at(500), Stats(), region="east")
    # A later clock, an older position (a worker restored from an older snapshot, another host's clock).
    snaps.write(states(3, 2), at(100), Stats(), region="east")
    loaded = snaps.load_latest()
    assert loaded.snapshot is not None and loaded.snapshot.manifest.snapshot_id == ahead.snapshot_id


def test_a_format_1_manifest_is_skipped_with_its_reason(snaps: SnapshotStore) -> None:
    """Format 1 held one topic's partitions: its positions cannot say which of a region's logs they are on."""
    usable = snaps.write(states(5, 1), at(10), Stats(), region="east")
    old = snaps.write(states(5, 2), at(50), Stats(), region="east")
    raw = orjson.loads(snaps.s3.get_object(Bucket=snaps.bucket, Key=snaps.manifest_key(old.snapshot_id))["Body"].read())
    raw.update(format=1, offsets={"0": 50})
    snaps.s3.put_object(Bucket=snaps.bucket, Key=snaps.manifest_key(old.snapshot_id), Body=orjson.dumps(raw))
    loaded = snaps.load_latest()
    assert loaded.snapshot is not None and loaded.snapshot.manifest == usable
    assert len(loaded.skipped) == 1 and old.snapshot_id in loaded.skipped[0]
    assert "unknown manifest format 1" in loaded.skipped[0]


def test_a_snapshot_holding_events_a_promotion_fences_is_skipped(snaps: SnapshotStore) -> None:
    """A snapshot taken before the region heard of a promotion may hold turns the promoted region
    never received (past its cut): loading it would bring them back."""
    clean = snaps.write(states(5, 1), at(10), Stats(), region="north", folded={("east", 0): 10, ("east", 1): 4})
    tainted = snaps.write(states(5, 2), at(20), Stats(), region="north", folded={("east", 0): 20, ("east", 1): 4})
    promo = Promotion(2, "north", "east", cut={"east": {0: 12, 1: 4}})
    assert snaps.load_latest().snapshot is not None
    assert snaps.load_latest().snapshot.manifest == tainted  # type: ignore[union-attr]
    loaded = snaps.load_latest(promotions=[promo])
    assert loaded.snapshot is not None and loaded.snapshot.manifest == clean
    assert len(loaded.skipped) == 1 and tainted.snapshot_id in loaded.skipped[0]
    assert "north (epoch 2)" in loaded.skipped[0] and "('east', 0)" in loaded.skipped[0]
    # A promotion that knew nothing of east (an empty cut for it) fences every event of east folded.
    assert snaps.load_latest(promotions=[Promotion(2, "north", "east", cut={"east": {}})]).snapshot is None


def test_a_truncated_snapshot_falls_back_to_the_previous_one(snaps: SnapshotStore) -> None:
    older = snaps.write(states(50, 1), at(10), Stats(applied=10), region="east")
    newer = snaps.write(states(60, 2), at(20), Stats(applied=20), region="east")
    s3 = snaps.s3
    body = s3.get_object(Bucket=snaps.bucket, Key=newer.data_key)["Body"].read()
    s3.put_object(Bucket=snaps.bucket, Key=newer.data_key, Body=body[: len(body) // 2])
    loaded = snaps.load_latest()
    assert loaded.snapshot is not None and loaded.snapshot.manifest == older
    assert loaded.snapshot.states == states(50, 1)
    assert len(loaded.skipped) == 1 and newer.snapshot_id in loaded.skipped[0] and "truncated" in loaded.skipped[0]


def test_a_snapshot_without_manifest_is_invisible_and_a_corrupt_manifest_is_skipped(snaps: SnapshotStore) -> None:
    older = snaps.write(states(5, 1), at(10), Stats(), region="east")
    newer = snaps.write(states(5, 2), at(20), Stats(), region="east")
    s3 = snaps.s3
    s3.delete_object(Bucket=snaps.bucket, Key=snaps.manifest_key(newer.snapshot_id))  # writer died before it
    garbage = snaps.write(states(5, 3), at(30), Stats(), region="east")
    s3.put_object(Bucket=snaps.bucket, Key=snaps.manifest_key(garbage.snapshot_id), Body=b'{"format": 1, "topi')
    loaded = snaps.load_latest()
    assert loaded.snapshot is not None and loaded.snapshot.manifest == older
    assert len(loaded.skipped) == 1 and "unreadable manifest" in loaded.skipped[0]


def test_data_that_does_not_match_its_manifest_is_never_loaded(snaps: SnapshotStore) -> None:
    only = snaps.write(states(5, 1), at(10), Stats(), region="east")
    other = snaps.write(states(7, 2), at(5), Stats(), region="east")
    s3 = snaps.s3
    # Same size, different bytes (a swapped object): the checksum catches it.
    foreign = s3.get_object(Bucket=snaps.bucket, Key=other.data_key)["Body"].read()
    s3.put_object(Bucket=snaps.bucket, Key=only.data_key, Body=foreign)
    s3.delete_object(Bucket=snaps.bucket, Key=other.data_key)  # and a manifest whose data is gone
    loaded = snaps.load_latest()
    assert loaded.snapshot is None and len(loaded.skipped) == 2


def test_retention_prunes_old_snapshots_and_orphans(snaps: SnapshotStore) -> None:
    orphan = snaps.write(states(2, 0), at(1), Stats(), region="east")
    snaps.s3.delete_object(Bucket=snaps.bucket, Key=snaps.manifest_key(orphan.snapshot_id))
    written = [snaps.write(states(2, i), at(10 * i), Stats(), region="east") for i in range(1, 6)]
    deleted = snaps.prune(keep=2)
    manifests, bad = snaps.manifests()
    assert [m.snapshot_id for m in manifests] == [written[4].snapshot_id, written[3].snapshot_id] and bad == []
    assert orphan.data_key in deleted
    remaining_data = {o["Key"] for o in snaps.s3.list_objects_v2(Bucket=snaps.bucket, Prefix=f"{snaps.root}/data/")["Contents"]}
    assert remaining_data == {written[4].data_key, written[3].data_key}
    loaded = snaps.load_latest()
    assert loaded.snapshot is not None and loaded.snapshot.manifest == written[4]
