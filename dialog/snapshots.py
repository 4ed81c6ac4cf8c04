"""Snapshots of every session state, with the log positions they reflect, in S3.

Layout under ``s3://BUCKET/PREFIX/TOPIC/``::

    data/<id>.jsonl.gz      every session state, one JSON object per line, gzip
    manifests/<id>.json     topic, positions, source positions, stats, session count, data key,
                            size and sha256

Each region writes its snapshots to its own object store: the positions are offsets of that
region's broker (its own dialog topic and its copies of the others'), meaningless anywhere else.

A snapshot is written data first, manifest last. A manifest is one small PUT, which S3 stores
whole or not at all, so a manifest exists only for data that was completely written: a reader
that starts from manifests never sees a half-written snapshot. The reader still verifies size,
checksum and session count before it hands anything over, and falls back to the next older
snapshot (or to nothing: a full replay) when a check fails, saying which and why.

"Newest" is the manifest with the furthest log position (sum of offsets), then the latest
creation time: a worker restored from an older snapshot, or one on another host, may write a
snapshot of an older position later, and clocks need not agree.
"""

from __future__ import annotations

import gzip
import hashlib
import logging
import time
import uuid
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import orjson
from botocore.exceptions import BotoCoreError, ClientError

from dialog.errors import SnapshotError
from dialog.fence import Promotion, tainted
from dialog.state import SessionState
from dialog.store import TP, Origin, Stats
from regionsync import objectstore
from regionsync.settings import Settings
from regionsync.settings_parts import ObjectStoreSettings

log = logging.getLogger(__name__)

# 2: positions per (topic, partition) and source positions per (origin, partition); format 1
# (one topic's partitions) is read as unusable: its positions cannot say which log they are on.
FORMAT = 2


def _nest(flat: Mapping[tuple[str, int], int]) -> dict[str, dict[str, int]]:
    out: dict[str, dict[str, int]] = {}
    for (name, p), value in sorted(flat.items()):
        out.setdefault(name, {})[str(p)] = value
    return out


def _flat(nested: Mapping[str, Mapping[str, Any]]) -> dict[tuple[str, int], int]:
    return {(str(name), int(p)): int(v) for name, parts in nested.items() for p, v in parts.items()}


@dataclass(frozen=True)
class Manifest:
    snapshot_id: str
    topic: str
    region: str
    created_ms: int
    offsets: dict[TP, int]
    stats: Stats
    sessions: int
    data_key: str
    size: int
    sha256: str
    sources: dict[Origin, int] = field(default_factory=dict)
    folded: dict[Origin, int] = field(default_factory=dict)
    format: int = FORMAT

    @property
    def position(self) -> int:
        return sum(self.offsets.values())

    def to_bytes(self) -> bytes:
        return orjson.dumps(
            {
                "format": self.format,
                "snapshot_id": self.snapshot_id,
                "topic": self.topic,
                "region": self.region,
                "created_ms": self.created_ms,
                "offsets": _nest(self.offsets),
                "sources": _nest(self.sources),
                "folded": _nest(self.folded),
                "stats": self.stats.to_dict(),
                "sessions": self.sessions,
                "data_key": self.data_key,
                "size": self.size,
                "sha256": self.sha256,
            }
        )

    @classmethod
    def from_bytes(cls, raw: bytes) -> Manifest:
        data = orjson.loads(raw)
        if data.get("format") != FORMAT:
            raise ValueError(f"unknown manifest format {data.get('format')!r}")
        return cls(
            snapshot_id=str(data["snapshot_id"]),
            topic=str(data["topic"]),
            region=str(data["region"]),
            created_ms=int(data["created_ms"]),
            offsets=_flat(data["offsets"]),
            sources=_flat(data.get("sources") or {}),
            folded=_flat(data.get("folded") or {}),
            stats=Stats.from_dict(data["stats"]),
            sessions=int(data["sessions"]),
            data_key=str(data["data_key"]),
            size=int(data["size"]),
            sha256=str(data["sha256"]),
        )


@dataclass(frozen=True)
class Snapshot:
    manifest: Manifest
    states: list[SessionState]


@dataclass(frozen=True)
class LoadResult:
    snapshot: Snapshot | None  # None: no usable snapshot, replay the whole log
    skipped: tuple[str, ...]  # why newer snapshots were not used, newest first


def s3_client(store: ObjectStoreSettings) -> Any:
    return objectstore.client(store)


class SnapshotStore:
    def __init__(
        self, client: Any, bucket: str, prefix: str, topic: str, clock: Callable[[], float] = time.time
    ) -> None:
        self.s3 = client
        self.bucket = bucket
        self.topic = topic
        self.root = f"{prefix.strip('/')}/{topic}"
        self._clock = clock

    @classmethod
    def from_settings(cls, settings: Settings) -> SnapshotStore:
        store = cls(s3_client(settings.object_store()), settings.s3_bucket, settings.dialog_snapshot_prefix, settings.dialog_topic)
        store.ensure_bucket()
        return store

    def ensure_bucket(self) -> None:
        try:
            self.s3.head_bucket(Bucket=self.bucket)
        except ClientError:
            try:
                self.s3.create_bucket(Bucket=self.bucket)
            except ClientError as exc:
                if exc.response.get("Error", {}).get("Code") not in ("BucketAlreadyOwnedByYou", "BucketAlreadyExists"):
                    raise SnapshotError(f"cannot use bucket {self.bucket}: {exc}") from exc

    # ------------------------------------------------------------------ keys
    def manifest_key(self, snapshot_id: str) -> str:
        return f"{self.root}/manifests/{snapshot_id}.json"

    def data_key(self, snapshot_id: str) -> str:
        return f"{self.root}/data/{snapshot_id}.jsonl.gz"

    def _list(self, folder: str) -> list[str]:
        keys: list[str] = []
        paginator = self.s3.get_paginator("list_objects_v2")
        for page in paginator.paginate(Bucket=self.bucket, Prefix=f"{self.root}/{folder}/"):
            keys.extend(obj["Key"] for obj in page.get("Contents", ()))
        return keys

    # ------------------------------------------------------------------ writing
    def write(
        self, states: Iterable[SessionState], offsets: Mapping[TP, int], stats: Stats, region: str,
        sources: Mapping[Origin, int] | None = None, folded: Mapping[Origin, int] | None = None,
    ) -> Manifest:
        """Write one snapshot (data, then manifest). Raises :class:`SnapshotError`; a failure
        leaves at most an orphaned data object, which no reader uses and :meth:`prune` removes."""
        created_ms = int(self._clock() * 1000)
        snapshot_id = f"{created_ms:013d}-{region}-{uuid.uuid4().hex[:8]}"
        lines = [s.to_json() for s in states]
        body = gzip.compress(b"\n".join(lines), compresslevel=1)
        manifest = Manifest(
            snapshot_id=snapshot_id,
            topic=self.topic,
            region=region,
            created_ms=created_ms,
            offsets=dict(offsets),
            sources=dict(sources or {}),
            folded=dict(folded or {}),
            stats=stats,
            sessions=len(lines),
            data_key=self.data_key(snapshot_id),
            size=len(body),
            sha256=hashlib.sha256(body).hexdigest(),
        )
        try:
            self.s3.put_object(Bucket=self.bucket, Key=manifest.data_key, Body=body)
            self.s3.put_object(Bucket=self.bucket, Key=self.manifest_key(snapshot_id), Body=manifest.to_bytes())
        except (BotoCoreError, ClientError) as exc:
            raise SnapshotError(f"snapshot {snapshot_id} not written: {exc}") from exc
        log.info("snapshot %s: %d sessions, %d bytes, position %d", snapshot_id, len(lines), len(body), manifest.position)
        return manifest

    # ------------------------------------------------------------------ reading
    def manifests(self) -> tuple[list[Manifest], list[str]]:
        """Readable manifests of this topic, newest first, and a reason for each unreadable one."""
        good: list[Manifest] = []
        bad: list[str] = []
        for key in self._list("manifests"):
            try:
                raw = self.s3.get_object(Bucket=self.bucket, Key=key)["Body"].read()
                manifest = Manifest.from_bytes(raw)
                if manifest.topic != self.topic:
                    raise ValueError(f"manifest of topic {manifest.topic}")
                good.append(manifest)
            except (BotoCoreError, ClientError, ValueError, KeyError, TypeError, AttributeError) as exc:
                bad.append(f"{key}: unreadable manifest ({type(exc).__name__}: {exc})")
        good.sort(key=lambda m: (m.position, m.created_ms, m.snapshot_id), reverse=True)
        return good, bad

    def read(self, manifest: Manifest) -> Snapshot:
        """Read and verify one snapshot completely; raises :class:`SnapshotError` on any mismatch."""
        try:
            body = self.s3.get_object(Bucket=self.bucket, Key=manifest.data_key)["Body"].read()
        except (BotoCoreError, ClientError) as exc:
            raise SnapshotError(f"data object missing or unreadable ({exc})") from exc
        if len(body) != manifest.size:
            raise SnapshotError(f"data is {len(body)} bytes, manifest says {manifest.size} (truncated?)")
        if hashlib.sha256(body).hexdigest() != manifest.sha256:
            raise SnapshotError("data checksum does not match the manifest")
        try:
            raw = gzip.decompress(body)
            states = [SessionState.from_dict(orjson.loads(line)) for line in raw.split(b"\n") if line]
        except (OSError, EOFError, ValueError, KeyError, TypeError) as exc:
            raise SnapshotError(f"data does not decode ({type(exc).__name__}: {exc})") from exc
        if len(states) != manifest.sessions or len({s.session_id for s in states}) != len(states):
            raise SnapshotError(f"{len(states)} distinct sessions in data, manifest says {manifest.sessions}")
        return Snapshot(manifest, states)

    def load_latest(self, promotions: Sequence[Promotion] = ()) -> LoadResult:
        """The newest snapshot that verifies completely, falling back to older ones. A snapshot
        holding events one of ``promotions`` fences (taken before the region heard of it) is
        skipped too: its sessions hold turns no other region has (dialog/fence.py)."""
        manifests, skipped = self.manifests()
        for manifest in manifests:
            try:
                for promo in promotions:
                    hit = tainted(promo, manifest.folded)
                    if hit:
                        raise SnapshotError(f"it holds events the promotion of {promo.region} (epoch {promo.epoch}) "
                                            f"fences ({hit})")
                return LoadResult(self.read(manifest), tuple(skipped))
            except SnapshotError as exc:
                reason = f"snapshot {manifest.snapshot_id}: {exc}"
                log.warning("skipping %s; falling back to an older snapshot", reason)
                skipped.append(reason)
        if skipped:
            log.warning("no usable snapshot (%d skipped): full replay of %s", len(skipped), self.topic)
        return LoadResult(None, tuple(skipped))

    # ------------------------------------------------------------------ retention
    def prune(self, keep: int) -> list[str]:
        """Keep the ``keep`` newest snapshots; delete older manifests (first) and their data, and
        data objects without a manifest that are older than the oldest kept snapshot (a writer
        that died between its two PUTs). Returns the deleted keys."""
        manifests, _ = self.manifests()
        kept = manifests[: max(keep, 1)]
        if not kept:
            return []
        kept_ids = {m.snapshot_id for m in kept}
        horizon = min(m.created_ms for m in kept)
        doomed: list[str] = []
        for key in self._list("manifests"):
            sid = key.rsplit("/", 1)[1].removesuffix(".json")
            if sid not in kept_ids and _created_ms(sid) < horizon:
                doomed.append(key)
        kept_data = {m.data_key for m in kept}
        doomed_data = [
            key
            for key in self._list("data")
            if key not in kept_data and _created_ms(key.rsplit("/", 1)[1].removesuffix(".jsonl.gz")) < horizon
        ]
        for key in doomed + doomed_data:  # manifests before data: never a manifest without its data
            self.s3.delete_object(Bucket=self.bucket, Key=key)
        if doomed or doomed_data:
            log.info("pruned %d snapshot manifests and %d data objects", len(doomed), len(doomed_data))
        return doomed + doomed_data


def _created_ms(snapshot_id: str) -> int:
    try:
        return int(snapshot_id.split("-", 1)[0])
    except ValueError:
        return 0
