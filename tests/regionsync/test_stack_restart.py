"""The embedded stack keeps everything across crashes and restarts (the issue's durability promise).

On a real two-region stack that has taken CMS rows and dialog turns: every region's topics
(each record below the end seen before, byte for byte), the consumer groups' committed offsets,
the dialog snapshots in each region's object store and the sessions in each region's state
store are all still there

* after kill -9 of the source region's broker and object store (tansu keeps its log, watermarks
  and group offsets in SeaweedFS, which keeps them on disk) and of every process of the other
  region, started again as ``stack up`` would; and
* after ``stack down`` and ``stack up`` (the CLI, as a user runs it twice).

A lost committed offset could hide behind a re-commit (the indexer would re-apply everything from
the start and commit the same end again), so each time the stack must then carry one new document
and one new turn everywhere, and each region's indexer must have applied exactly the records its
chunks topic gained meanwhile: one more (the new document), not the whole topic again.

The first `stack up; stack down; stack up` also once failed on the Postgres data dir left at 0701
by `stack down` ("has invalid permissions"): the second `demo` or `stack up` failed on every machine.
"""

from __future__ import annotations

import hashlib
import re
import stat
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any

import orjson
import psycopg
import pytest
import requests
from confluent_kafka import Consumer, KafkaError, TopicPartition
from confluent_kafka.admin import AdminClient

from dialog.snapshots import SnapshotStore
from drills import inject, verify
from drills.inject import Scope, region_workers
from indexer.lag import region_lag
from mirror import policy
from regionsync.kafka import fetch_ends
from regionsync.settings import Settings
from regionsync.settings_parts import KafkaSettings
from serve.auth import ASSISTANT, bearer
from stack import broker, postgres, procs, seaweed, stack
from streams.app import APP_ID
from tests.e2e.conftest import e2e_settings, wait_for
from tests.state_dirs import private_state_dir

pytestmark = pytest.mark.integration

TP = tuple[str, int]


@pytest.fixture()
def settings() -> Iterator[Settings]:
    # Not under pytest's tmp_path (see tests/state_dirs.py); every port free, the region services',
    # the workers' metrics and Prometheus's included: other stacks run on this machine.
    with private_state_dir("restart-tests") as state:
        # Snapshots soon after a change, so each region has some before the crash.
        s = e2e_settings(state).model_copy(update={"dialog_snapshot_every_s": 2.0})
        try:
            yield s
        finally:
            stack.down(s)


def cli(settings: Settings, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "cli", *args],
        capture_output=True, text=True, env=settings.child_env(), timeout=600,
    )


def stack_up(settings: Settings) -> dict[str, Any]:
    """`regionsync stack up --json`, the stack's status after it (``stack.up`` tries the
    connector's registration three times: Connect's validate call can outlast the REST client's
    read timeout on a loaded machine)."""
    out = cli(settings, "stack", "up", "--json")
    assert out.returncode == 0, out.stderr[-3000:]
    return dict(orjson.loads(out.stdout))


def _mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def _assert_all_up(info: dict[str, Any]) -> None:
    assert info["connect"]["up"] and info["connect"]["connector"] == "RUNNING", info["connect"]
    assert info["prometheus"]["up"] and all(info["workers"].values()), info["workers"]
    for name, r in info["regions"].items():
        assert r["object_store"]["up"] and r["broker"]["up"] and r["postgres"]["up"] and r["milvus_up"], (name, r)
        assert r["indexer_running"] and r["dialog_running"] and r["service_running"], (name, r)
        assert r["mirrors_in"] and all(r["mirrors_in"].values()), (name, r["mirrors_in"])
    assert sorted(r["role"] for r in info["regions"].values()) == ["active", "standby"]


# ---------------------------------------------------------------------------- what must be kept


@dataclass
class Facts:
    """What one moment of the stack holds, per region."""

    ends: dict[str, dict[TP, int]]  # every topic partition of the region's broker -> its end
    digests: dict[str, dict[TP, str]]  # -> sha256 of its records below that end
    committed: dict[str, dict[str, dict[TP, int]]]  # region -> consumer group -> committed offsets
    manifests: dict[str, dict[str, bytes]]  # region -> snapshot manifest key -> its bytes
    sessions: dict[str, dict[str, int]]  # region -> session id -> last_seq in its state store


def _groups(settings: Settings, region: str) -> dict[str, list[TP]]:
    """The consumer groups that commit offsets on ``region``'s broker, with their partitions."""
    parts = settings.topic_partitions
    chunks = policy.chunks_topic_in(settings, region)
    out = {settings.region_group(region): [(chunks, p) for p in range(parts)]}
    if region == settings.source_region:  # the change agent (Faust) reads the CMS side and the heal requests
        topics = [settings.cdc_topic, settings.cms_topic, *policy.inbound_topics(settings, region, settings.heal_topic)]
        out[APP_ID] = [(t, p) for t in topics for p in range(parts)]
    return out


def _committed(bootstrap: str, group: str, tps: list[TP]) -> dict[TP, int]:
    consumer = Consumer({"bootstrap.servers": bootstrap, "group.id": group, "enable.auto.commit": False})
    try:
        got = consumer.committed([TopicPartition(t, p) for t, p in tps], timeout=20)
        return {(tp.topic, tp.partition): tp.offset for tp in got if tp.offset >= 0}
    finally:
        consumer.close()


def _digests(bootstrap: str, ends: dict[TP, int], timeout: float = 120.0) -> dict[TP, str]:
    """sha256 of each partition's records (offset, key, value, headers) below ``ends``."""
    hashes = {tp: hashlib.sha256() for tp in ends}
    reached = dict.fromkeys(ends, 0)
    consumer = Consumer({"bootstrap.servers": bootstrap, "group.id": f"restart-check-{uuid.uuid4().hex[:6]}",
                         "enable.auto.commit": False, "enable.partition.eof": True, "auto.offset.reset": "error",
                         "fetch.wait.max.ms": 20})
    try:
        consumer.assign([TopicPartition(t, p, 0) for (t, p), end in ends.items() if end > 0])
        deadline = time.monotonic() + timeout
        while any(reached[tp] < end for tp, end in ends.items()):
            assert time.monotonic() < deadline, {tp: (reached[tp], e) for tp, e in ends.items() if reached[tp] < e}
            for msg in consumer.consume(1000, 0.2):
                tp = (str(msg.topic()), int(msg.partition() or 0))
                err = msg.error()
                if err is not None:
                    assert err.code() == KafkaError._PARTITION_EOF, f"{tp}: {err}"
                    reached[tp] = max(reached[tp], int(msg.offset() or 0))
                    continue
                offset = int(msg.offset() or 0)
                reached[tp] = max(reached[tp], offset + 1)
                if offset < ends[tp]:
                    hashes[tp].update(orjson.dumps([offset, msg.key(), msg.value(), msg.headers() or []],
                                                   default=lambda b: b.hex()))
        return {tp: h.hexdigest() for tp, h in hashes.items()}
    finally:
        consumer.close()


def _topic_ends(bootstrap: str) -> dict[TP, int]:
    topics = AdminClient({"bootstrap.servers": bootstrap}).list_topics(timeout=20).topics
    tps = [(name, p) for name, meta in topics.items() for p in meta.partitions]
    # tansu's ListOffsets answers below the real end: the fetch path says where each one ends.
    return fetch_ends(KafkaSettings(bootstrap), tps, timeout_s=30.0)


def _manifests(settings: Settings, region: str) -> dict[str, bytes]:
    snaps = SnapshotStore.from_settings(settings.for_region(region))
    return {key: snaps.s3.get_object(Bucket=snaps.bucket, Key=key)["Body"].read() for key in snaps._list("manifests")}


def _last_seq(settings: Settings, region: str, session: str) -> int:
    resp = requests.get(f"{settings.serve_url(region)}/sessions/{session}", timeout=30,
                        headers=bearer(settings, ASSISTANT))
    return int(resp.json()["last_seq"]) if resp.status_code == 200 else -1


def facts(settings: Settings, sessions: list[str]) -> Facts:
    f = Facts({}, {}, {}, {}, {})
    for region in settings.regions:
        bootstrap = settings.kafka_bootstraps[region]
        f.ends[region] = _topic_ends(bootstrap)
        f.digests[region] = _digests(bootstrap, f.ends[region])
        f.committed[region] = {g: _committed(bootstrap, g, tps) for g, tps in _groups(settings, region).items()}
        f.manifests[region] = _manifests(settings, region)
        f.sessions[region] = {s: _last_seq(settings, region, s) for s in sessions}
    return f


def assert_kept(settings: Settings, before: Facts) -> None:
    """Everything ``before`` saw is still there (things may have been added since)."""
    for region in settings.regions:
        bootstrap = settings.kafka_bootstraps[region]
        ends = _topic_ends(bootstrap)
        lost = {tp: (end, ends.get(tp)) for tp, end in before.ends[region].items() if ends.get(tp, -1) < end}
        assert not lost, f"{region}: topics lost or shorter (end before, now): {lost}"
        assert _digests(bootstrap, before.ends[region]) == before.digests[region], f"{region}: records changed"
        for group, offsets in before.committed[region].items():
            now = _committed(bootstrap, group, list(offsets))
            moved_back = {tp: (o, now.get(tp)) for tp, o in offsets.items() if now.get(tp, -1) < o}
            assert not moved_back, f"{region}: group {group} lost committed offsets (before, now): {moved_back}"
        manifests = _manifests(settings, region)
        newest_before = max(before.manifests[region])  # ids start with the creation time
        for key, raw in before.manifests[region].items():
            newer = [k for k in manifests if k > newest_before]
            if key in manifests:
                assert manifests[key] == raw, f"{region}: snapshot manifest {key} changed"
            else:  # only retention may remove one, and only once enough newer ones exist
                assert len(newer) >= settings.dialog_snapshot_retention, f"{region}: snapshot manifest {key} lost"
        snaps = SnapshotStore.from_settings(settings.for_region(region))
        loaded = snaps.load_latest().snapshot  # verifies the data object against its manifest's size and sha256
        assert loaded is not None and loaded.manifest.sessions >= 1, f"{region}: no readable snapshot"
        for session, seq in before.sessions[region].items():
            assert _last_seq(settings, region, session) >= seq >= 1, f"{region}: session {session} lost turns"


# ---------------------------------------------------------------------------- traffic


def _applied(settings: Settings, region: str) -> float:
    """Chunk records the region's running indexer has applied since it started (its /metrics)."""
    body = requests.get(f"http://{settings.serve_host}:{settings.metrics_port('indexer', region)}/metrics",
                        timeout=10).text
    found = re.search(rf'^regionsync_index_records_applied_total{{region="{region}"}} (\S+)$', body, re.M)
    return float(found.group(1)) if found else 0.0


def _chunks_end(settings: Settings, region: str) -> int:
    topic = policy.chunks_topic_in(settings, region)
    ends = fetch_ends(settings.kafka(region), [(topic, p) for p in range(settings.topic_partitions)], 30)
    return sum(ends.values())


def _turn(settings: Settings, session: str, text: str) -> int:
    resp = requests.post(f"{settings.serve_url(settings.source_region)}/sessions/{session}/turns",
                         json={"text": text}, timeout=120, headers=bearer(settings, ASSISTANT))
    assert resp.status_code == 200, resp.text
    return int(resp.json()["last_seq"])


def _settle(settings: Settings, sessions: dict[str, int], docs: int) -> None:
    """Every region holds the CMS table, every applied record is committed, every session's last
    turn is in every region's store and in a snapshot there."""
    reports = verify.wait_converged(settings, timeout=600)
    assert all(r.matches for r in reports.values()), [d for r in reports.values() for d in r.differences][:20]
    assert all(r.documents >= docs for r in reports.values())
    for region in settings.regions:
        wait_for(partial(_caught_up, settings, region), 120, f"{region}'s indexer committed")
        for session, seq in sessions.items():
            wait_for(partial(_has_turn, settings, region, session, seq), 120, f"session {session} in {region}")
        snaps = SnapshotStore.from_settings(settings.for_region(region))
        wait_for(partial(_snapshot_holds, snaps, len(sessions)), 120, f"a snapshot of every session in {region}")


def _caught_up(settings: Settings, region: str) -> bool:
    return region_lag(settings, region) == 0


def _has_turn(settings: Settings, region: str, session: str, seq: int) -> bool:
    return _last_seq(settings, region, session) >= seq


def _snapshot_holds(snaps: SnapshotStore, sessions: int) -> bool:
    manifests, _bad = snaps.manifests()
    return bool(manifests) and manifests[0].sessions >= sessions


def _chunk_ends(settings: Settings, f: Facts) -> dict[str, int]:
    """Records of each region's chunks topic (its copy outside the source) when ``f`` was taken."""
    return {r: sum(end for (t, _p), end in f.ends[r].items() if t == policy.chunks_topic_in(settings, r))
            for r in settings.regions}


def _new_traffic_flows(settings: Settings, db: psycopg.Connection, sessions: dict[str, int], tag: str,
                       applied_since: dict[str, float], ends_since: dict[str, int]) -> None:
    """One new document and one new turn reach every region, and each region's indexer has
    applied, since ``applied_since`` was read off it, exactly the records its chunks topic gained
    since it ended at ``ends_since``: had a committed offset been lost, it would have applied
    older records again (and committed the same end again, which no offset check can tell)."""
    db.execute("INSERT INTO documents (id, title, body) VALUES (%s, %s, %s)",
               (f"after-{tag}", f"After {tag}", f"A document written after the {tag}, to every region."))
    session = next(iter(sessions))
    sessions[session] = _turn(settings, session, f"and after the {tag}?")
    _settle(settings, sessions, docs=1)
    for region in settings.regions:
        gained = _chunks_end(settings, region) - ends_since[region]
        applied = _applied(settings, region) - applied_since[region]
        assert gained >= 1, f"{region}: the new document's record did not arrive"
        assert applied == gained, (f"{region}'s indexer applied {applied} records for the {gained} new ones: it "
                                   "started again from an older offset")
    assert _chunks_end(settings, settings.source_region) - ends_since[settings.source_region] == 1, (
        "the change agent (or Debezium) sent old changes again: its offsets were not kept")


# ---------------------------------------------------------------------------- the tests


def test_crashes_and_restarts_keep_every_topic_offset_and_snapshot(settings: Settings) -> None:
    _assert_all_up(stack_up(settings))

    with psycopg.connect(settings.pg_dsn(), autocommit=True) as db:
        for i in range(6):
            db.execute("INSERT INTO documents (id, title, body, tags) VALUES (%s, %s, %s, %s)",
                       (f"kept-{i}", f"Kept {i}", f"Document {i} must outlive every crash. " * 8, ["kept"]))
        sessions = {f"restart-{i}-{uuid.uuid4().hex[:6]}": 0 for i in range(2)}
        for session in sessions:
            _turn(settings, session, "where is my order A-1001?")
            sessions[session] = _turn(settings, session, "and when will it arrive?")
        _settle(settings, sessions, docs=6)
        before = facts(settings, list(sessions))
        applied = {r: _applied(settings, r) for r in settings.regions}
        assert all(before.committed[r][settings.region_group(r)] for r in settings.regions)
        assert all(before.manifests[r] for r in settings.regions)

        # 1. kill -9 of the source region's broker and object store, and of every process of the
        # other region (its Postgres, Milvus, replicator, dialog worker, indexer and service too);
        # all started again as `stack up` starts them.
        source, other = settings.source_region, settings.others(settings.source_region)[0]
        procs.kill9(settings.state_dir, broker.proc_name(source))
        procs.kill9(settings.state_dir, seaweed.proc_name(source))
        whole_region = region_workers(settings, other, Scope.REGION)
        inject.kill(settings, whole_region)
        assert not any(stack.alive(settings, name) for name in
                       [broker.proc_name(source), seaweed.proc_name(source), *whole_region])
        stack.starter(settings, seaweed.proc_name(source))()
        stack.starter(settings, broker.proc_name(source))()
        inject.restart(settings, whole_region)
        applied[other] = 0.0  # its indexer started afresh
        assert_kept(settings, before)
        _new_traffic_flows(settings, db, sessions, "crash", applied, _chunk_ends(settings, before))
        after_crash = facts(settings, list(sessions))

    # 2. `stack down`, `stack up`: every process stopped and started again.
    down = cli(settings, "stack", "down")
    assert down.returncode == 0, down.stderr[-3000:]
    for region in settings.regions:
        assert not postgres.is_running(settings, region)
        assert _mode(postgres.data_dir(settings, region)) in (0o700, 0o750)

    _assert_all_up(stack_up(settings))
    for region in settings.regions:
        assert _mode(postgres.data_dir(settings, region)) in (0o700, 0o750)
    assert_kept(settings, after_crash)
    with psycopg.connect(settings.pg_dsn(), autocommit=True) as db:
        # The indexers started afresh: every record they applied came after the restart.
        _new_traffic_flows(settings, db, sessions, "restart", dict.fromkeys(settings.regions, 0.0),
                           _chunk_ends(settings, after_crash))

    # The text a user reads names every process: Prometheus, the change agent, and per region its
    # object store, broker, Postgres, Milvus, indexer, dialog worker, replicators and service.
    text = cli(settings, "stack", "status")
    assert text.returncode == 0, text.stderr[-3000:]
    lines = text.stdout.splitlines()
    assert ["prometheus", f"http://127.0.0.1:{settings.prometheus_port}", "up=True"] in [ln.split() for ln in lines]
    assert ["changes", "running=True"] in [ln.split() for ln in lines]
    for region in settings.regions:
        start = lines.index(f"region {region}" + (" (source)" if region == settings.source_region else ""))
        block = lines[start + 1:]
        block = block[:next((i for i, ln in enumerate(block) if not ln.startswith("  ")), len(block))]
        kinds = {ln.split()[0]: ln for ln in block}
        for kind in ("object", "broker", "postgres", "milvus"):
            assert "up=True" in kinds[kind], block
        assert "indexer=True" in kinds["milvus"] and "dialog worker=True" in kinds["milvus"], block
        for other in settings.others(region):
            assert any(ln.split()[:3] == ["from", other, "replicator=True"] for ln in block), block
        service = kinds["serve"]
        assert settings.serve_url(region) in service and "running=True" in service and "ready=" in service
        assert "role=active" in service or "role=standby" in service
    assert settings.pg_password.get_secret_value() not in text.stdout + text.stderr


def test_postgres_starts_on_a_data_dir_an_older_version_left_at_0701(settings: Settings) -> None:
    region = settings.source_region
    postgres.start(settings, region)
    postgres.stop(settings, region)
    ddir = postgres.data_dir(settings, region)
    ddir.chmod(0o701)  # what stop() used to do

    postgres.start(settings, region)
    try:
        assert postgres.is_running(settings, region)
        assert _mode(ddir) == 0o700
    finally:
        postgres.stop(settings, region)
