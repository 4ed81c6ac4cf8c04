"""Erasure of a conversation across two real regions (crypto-shredding, issue 20).

East writes turns of two customers with sealed payloads (the keys in east's database); the
replicators (``python -m cli.replicator``, with dialog's key courier) copy records and keys into
north; north is promoted and writes a turn of each; then north erases one of them. Afterwards
neither region's store, key ring, snapshots, reference fold of its logs nor a fold again from the
log's start shows any of that customer's text; the records still in both brokers are sealed and no
key left anywhere opens them; the other customer is untouched everywhere.
"""

from __future__ import annotations

import gzip
import sys
import uuid
from functools import partial

import psycopg
import pytest

from dialog.events import decode_opened
from dialog.kafka_io import KafkaPublisher
from dialog.keys import lookup
from dialog.manager import DialogManager
from dialog.pg_store import PostgresStore
from dialog.snapshots import SnapshotStore
from dialog.state import ERASED, SessionState
from dialog.store import Stats
from dialog.worker import DialogWorker
from drills.dialoglog import fold_region, read_all
from regionsync.pgdb import region_dsn
from regionsync.settings import Settings
from serve.roles import RegionRole
from stack import procs, topics

from .test_failover import publish_promotion, spawn_replicator, spawn_worker

pytestmark = pytest.mark.integration  # starts real services

GONE, KEPT = "cust-erase", "cust-keep"
SECRET = "IBAN DE89370400440532013000"  # what the erased customer said, in every turn
KEPT_TEXT = "where is my parcel"


def text_of(state: SessionState | None) -> str:
    if state is None:
        return ""
    return " ".join([*(t.text for t in state.turns), *map(str, state.slots.values()), state.customer_id])


def started(proc: procs.Proc) -> bool:
    return "ready:" in proc.log_path.read_text(errors="replace")


def manager(settings: Settings, region: str, store: PostgresStore, epoch: int) -> DialogManager:
    publisher = KafkaPublisher(settings.for_region(region), keys=store.keyring, region=region)
    return DialogManager(publisher, sessions=store, region=region, epoch=epoch)


def turn(sid: str, n: int) -> dict[str, object]:
    if sid == GONE:
        return {"session_id": sid, "text": f"turn {n}: my {SECRET}", "slots": {"iban": SECRET},
                "customer_id": f"customer {SECRET}"}
    return {"session_id": sid, "text": f"turn {n}: {KEPT_TEXT}"}


def test_an_erased_conversation_is_unreadable_in_every_region(settings: Settings, spawned: list[str]) -> None:
    tag = uuid.uuid4().hex[:6]
    settings = settings.model_copy(update={"dialog_snapshot_every_events": 1, "dialog_snapshot_every_s": 0.5,
                                           "dialog_snapshot_retention": 3})
    for region in settings.regions:
        topics.ensure_topics(settings, region)
    stores = {r: PostgresStore.for_region(settings, r) for r in settings.regions}
    roles = {r: RegionRole(settings, r) for r in settings.regions}
    workers = {r: spawn_worker(settings, r, tag, spawned) for r in settings.regions}
    for source, target in settings.mirror_pairs():
        spawn_replicator(settings, source, target, tag, spawned)
    # Both workers past their start (an empty store's start pulls the other regions' keys): from
    # here on, keys reach north only through the replicator's courier.
    for region, proc in workers.items():
        procs.wait_until(partial(started, proc), 60, f"{region}'s worker", proc)

    # ---- east writes a turn of each customer, sealed with keys only east's database holds
    east = manager(settings, "east", stores["east"], roles["east"].current().epoch)
    for sid in (GONE, KEPT):
        east.process(turn(sid, 1))
    east_keys = stores["east"].keyring.get_many([GONE, KEPT])
    assert {s for s, _kid in east_keys} == {GONE, KEPT}

    def has_turns(region: str, n: int) -> bool:
        return all(len((stores[region].get(s) or SessionState(s)).turns) >= 2 * n for s in (GONE, KEPT))

    # ---- north receives records and keys (the courier copies keys before records) and folds them whole
    procs.wait_until(lambda: has_turns("north", 1), 120, "north to fold east's turns", workers["north"])
    assert stores["north"].keyring.get_many([GONE, KEPT]) == east_keys
    assert SECRET in text_of(stores["north"].get(GONE))

    # ---- north is promoted and writes the next turn of each, with the key it was given
    promo, changed = roles["north"].promote()
    assert changed
    publish_promotion(settings, "north", roles["north"], promo)
    north = manager(settings, "north", stores["north"], promo.epoch)
    written = {sid: north.process(turn(sid, 2)).last_seq for sid in (GONE, KEPT)}

    def folded_all(region: str) -> bool:
        # north's store is written by north's worker folding north's log, not by the manager: it can
        # lag behind east's (CI: east had folded turn 2 while north's store still had turn 1 only)
        return all((s := stores[region].get(sid)) is not None and s.last_seq >= seq for sid, seq in written.items())

    for region in settings.regions:
        procs.wait_until(partial(folded_all, region), 120, f"{region} to fold north's turns", workers[region])
    assert has_turns("east", 2) and has_turns("north", 2)
    kept_before = stores["north"].get(KEPT)
    assert kept_before is not None and kept_before.last_seq == written[KEPT]
    assert stores["east"].get(KEPT) == kept_before

    # ---- the erasure, taken by the active region (what POST /admin/sessions/{id}/erase does)
    tombstone = north.erase(GONE, "ticket 1")
    stores["north"].keyring.erase([GONE])
    assert tombstone.status == ERASED and not text_of(tombstone)

    def erased_in(region: str) -> bool:
        return stores[region].get(GONE) == tombstone and not stores[region].keyring.get_many([GONE])

    for region in settings.regions:
        procs.wait_until(partial(erased_in, region), 120, f"{region} to fold the erasure", workers[region])
        assert stores[region].keyring.erased([GONE, KEPT]) == {GONE}
        assert stores[region].get(KEPT) == kept_before  # the other customer is untouched
        assert stores[region].keyring.get_many([KEPT]) == {k: v for k, v in east_keys.items() if k[0] == KEPT}

    # ---- snapshots: the worker wrote one at once and deleted every older one
    for region in settings.regions:
        snaps = SnapshotStore.from_settings(settings.for_region(region))

        def clean(snaps: SnapshotStore = snaps) -> bool:
            manifests, _bad = snaps.manifests()
            raws = [gzip.decompress(snaps.s3.get_object(Bucket=snaps.bucket, Key=m.data_key)["Body"].read())
                    for m in manifests]
            return bool(manifests) and all(SECRET.encode() not in raw for raw in raws)

        procs.wait_until(clean, 60, f"{region}'s snapshots without the erased session", workers[region])
        newest = snaps.read(snaps.manifests()[0][0])
        assert {s.session_id: s for s in newest.states}[GONE] == tombstone

    # ---- the log: every record is still there, sealed; no key left anywhere opens the erased ones
    for region in settings.regions:
        records, _ends = read_all(settings, region)
        mine = [m for m in records if m.key() == GONE.encode()]
        assert len(mine) >= 6 and all(SECRET.encode() not in (m.value() or b"") for m in records)
        held = lookup(stores[region].keyring.get_many([GONE, KEPT]))
        opened = [decode_opened(m.key(), m.value(), held)[1] for m in mine]
        assert opened.count(False) >= 4  # the utterances, slots and the start are sealed and stay shut
        kept = [decode_opened(m.key(), m.value(), held) for m in records if m.key() == KEPT.encode()]
        assert kept and all(whole for _e, whole in kept)

        # the reference fold of the region's logs (what the drills compare with) agrees
        ref = fold_region(settings, region)
        assert ref.states[GONE] == tombstone and ref.states[KEPT] == kept_before

    # ---- a fold again from the log's start (a rebuild) does not bring the conversation back
    procs.stop(settings.state_dir, workers["north"].name, timeout=20)
    worker = DialogWorker.create(settings, "north", snapshots=False)
    try:
        worker.start()
        worker.refold()
        assert worker.store.get(GONE) == tombstone and worker.store.get(KEPT) == kept_before
        assert worker.store.stats().unopened >= 4
    finally:
        worker.close()

    # ---- north loses its database (states, positions, keys, erasures): the rebuild pulls the keys
    # and erasures east holds, so the other customer comes back whole and the erased one does not
    stores["north"].replace_all([], {}, Stats())
    with psycopg.connect(region_dsn(settings, "north"), autocommit=True) as conn:
        conn.execute("DELETE FROM dialog_keys")
        conn.execute("DELETE FROM dialog_erased")
    worker = DialogWorker.create(settings, "north", snapshots=False)
    try:
        report = worker.rebuild()
        assert report.source == "full replay"
        assert worker.store.get(GONE) == tombstone and worker.store.get(KEPT) == kept_before
        assert worker.store.keyring.erased([GONE, KEPT]) == {GONE}
    finally:
        worker.close()
    print(f"\nerasure: tombstone {tombstone}", file=sys.stderr)
    for store in stores.values():
        store.close()
    for role in roles.values():
        role.close()
