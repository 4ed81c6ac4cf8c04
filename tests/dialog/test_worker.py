"""The worker on the real stack (in process): dead letters, exactly-once across a crash, rebuild
from the region's own snapshots + tail with fallbacks, and the CLI."""

from __future__ import annotations

import argparse
import base64
from collections.abc import Iterable, Mapping, Sequence

import orjson
import pytest
from confluent_kafka import Consumer, TopicPartition

from dialog import cli
from dialog.errors import DialogError
from dialog.events import SessionStarted, UserUtterance, encode, key_of
from dialog.fence import Promotion
from dialog.kafka_io import consumer_config, ensure_topic
from dialog.snapshots import SnapshotStore
from dialog.state import SessionState
from dialog.store import TP, FencedEvent, Origin, StateStore, Stats
from dialog.worker import DialogWorker
from regionsync.settings import Settings

from .helpers import ends_of, fold_log, make_log, produce_raw, publish

pytestmark = pytest.mark.integration  # starts real services


def read_dlq(settings: Settings, expected: int) -> list[dict[str, object]]:
    consumer = Consumer(consumer_config(settings, "dlq-reader"))
    consumer.assign([TopicPartition(settings.dlq_topic, p, 0) for p in range(settings.topic_partitions)])
    out: list[dict[str, object]] = []
    for _ in range(100):
        out += [orjson.loads(m.value()) for m in consumer.consume(100, 0.1) if not m.error()]
        if len(out) >= expected:
            break
    consumer.close()
    return out


def test_malformed_events_go_to_the_dead_letters_and_the_rest_applies(settings: Settings) -> None:
    def event(cls: type, seq: int, sid: str = "s-1", **payload: object) -> tuple[bytes, bytes]:
        e = cls(session_id=sid, seq=seq, event_id=f"{sid}-{seq}", ts_ms=seq, origin="east", **payload)
        return key_of(e), encode(e)

    missing_text = orjson.dumps({"type": "user_utterance", "v": 1, "session_id": "s-1", "seq": 3,
                                 "event_id": "s-1-3", "ts_ms": 3, "origin": "east"})  # fmt: skip
    records: list[tuple[bytes | None, bytes | None]] = [
        event(SessionStarted, 1),
        event(UserUtterance, 2, text="one"),
        (b"s-1", missing_text),
        (b"s-1", b"\xff\xfe not json"),
        (b"s-1", None),
        (b"someone-else", event(UserUtterance, 4, text="wrong key")[1]),
        event(UserUtterance, 4, text="four"),
        event(UserUtterance, 5, text="five"),
        event(SessionStarted, 1, sid="s-2"),
    ]
    ensure_topic(settings, settings.dialog_topic)
    produce_raw(settings, settings.dialog_topic, records)

    worker = DialogWorker.create(settings, "east", snapshots=False)
    try:
        report = worker.rebuild()
        s1 = worker.store.get("s-1")
        assert report.events_replayed == len(records) and report.source == "full replay"
        assert s1 is not None and [t.text for t in s1.turns] == ["one", "four", "five"]
        assert s1.gaps == ((3, 3),) and s1.applied == 4
        assert worker.store.get("s-2") is not None
        assert worker.store.stats() == Stats(applied=5, gaps=1, dead_letters=4)
    finally:
        worker.close()

    dead = read_dlq(settings, 4)
    assert sorted(str(d["reason"]) for d in dead) == ["key_mismatch", "missing_field", "not_json", "tombstone"]
    for d in dead:
        assert d["stage"] == "dialog" and d["topic"] == settings.dialog_topic
        assert set(d) == {"reason", "detail", "topic", "partition", "offset", "key_b64", "value_b64", "stage"}
    not_json = next(d for d in dead if d["reason"] == "not_json")
    assert base64.b64decode(str(not_json["value_b64"])) == b"\xff\xfe not json"
    assert next(d for d in dead if d["reason"] == "tombstone")["value_b64"] is None


class CrashingStore:
    """A store that dies on its N-th commit, before writing anything (a crash mid-batch)."""

    def __init__(self, inner: StateStore, crash_on: int) -> None:
        self._inner, self._left = inner, crash_on

    def __getattr__(self, name: str) -> object:
        return getattr(self._inner, name)

    def commit(
        self, states: Iterable[SessionState], offsets: Mapping[TP, int], expected: Mapping[TP, int], stats: Stats,
        *, sources: Mapping[Origin, int] | None = None, folded: Mapping[Origin, int] | None = None,
        fenced: Sequence[FencedEvent] = (), promotions: Sequence[Promotion] = (),
        known_promotions: Iterable[tuple[int, str]] | None = None, erased: Sequence[str] = (),
    ) -> None:
        self._left -= 1
        if self._left == 0:
            raise RuntimeError("simulated crash")
        self._inner.commit(states, offsets, expected, stats, sources=sources, folded=folded, fenced=fenced,
                           promotions=promotions, known_promotions=known_promotions, erased=erased)


def test_a_restarted_worker_applies_no_event_twice(settings: Settings) -> None:
    settings = settings.model_copy(update={"dialog_batch_max_events": 150, "dialog_catchup_batch_events": 150})
    events = make_log(300, seed=3)
    ends = ends_of(publish(settings, events), settings.dialog_topic)

    first = DialogWorker.create(settings, "east", snapshots=False)
    first.store = CrashingStore(first.store, crash_on=6)  # type: ignore[assignment]
    first.start()
    with pytest.raises(RuntimeError, match="simulated crash"):
        first.catch_up()
    partial = first.store.stats().applied
    assert 0 < partial < len(events)
    first.close()  # the process is gone; its store keeps what was committed

    second = DialogWorker.create(settings, "east", snapshots=False)
    try:
        report = second.rebuild()
        assert report.source == "existing store" and report.events_replayed == len(events) - partial
        expected, _ = fold_log(settings, ends)
        stored = {s.session_id: s for s in second.store.all_states()}
        assert stored == expected
        # Counts prove it: every event applied once, none seen twice.
        assert second.store.stats() == Stats(applied=len(events))
        assert sum(len(s.turns) for s in stored.values()) == sum(e.TYPE in ("user_utterance", "bot_replied") for e in events)
        assert second.positions == ends
        # The source positions of the region's own log are its offsets (no provenance to translate).
        assert second.store.sources() == second.store.folded() == {("east", p): o for (_t, p), o in ends.items()}
    finally:
        second.close()


def test_rebuild_falls_back_past_a_corrupt_snapshot_then_to_a_full_replay(settings: Settings) -> None:
    """A region whose state store is lost rebuilds from its own snapshots (in its own object store)."""
    # A snapshot every 300 states written (a batch of 500 records touches about 100 sessions).
    settings = settings.model_copy(update={"dialog_batch_max_events": 500, "dialog_catchup_batch_events": 500, "dialog_snapshot_every_events": 300,
                                           "dialog_snapshot_retention": 10})  # fmt: skip
    topic = settings.dialog_topic
    events = make_log(400, seed=4)
    ends = ends_of(publish(settings, events), topic)
    first = DialogWorker.create(settings, "east")
    try:
        first.rebuild()
        assert first.snapshots is not None
        manifests, _ = first.snapshots.manifests()
    finally:
        first.close()
    assert len(manifests) >= 2
    assert all(set(m.offsets) <= set(ends) and m.region == "east" for m in manifests)
    tail = ends_of(publish(settings, make_log(50, seed=5, prefix="late")), topic, ends)
    expected, _ = fold_log(settings, tail)

    # East's store is lost (a new database) and its newest snapshot truncated: it uses the one
    # before, then replays the tail.
    snaps = first.snapshots
    body = snaps.s3.get_object(Bucket=snaps.bucket, Key=manifests[0].data_key)["Body"].read()
    snaps.s3.put_object(Bucket=snaps.bucket, Key=manifests[0].data_key, Body=body[:100])
    lost = settings.model_copy(update={"dialog_database_prefix": settings.dialog_database_prefix + "lost_"})
    again = DialogWorker.create(lost, "east")
    try:
        report = again.rebuild()
        assert report.source == "snapshot" and report.snapshot_id == manifests[1].snapshot_id
        assert len(report.skipped_snapshots) == 1 and manifests[0].snapshot_id in report.skipped_snapshots[0]
        assert report.events_replayed == sum(tail.values()) - manifests[1].position
        assert {s.session_id: s for s in again.store.all_states()} == expected
        assert again.store.stats().applied == sum(tail.values())
        assert again.positions == tail
    finally:
        again.close()

    # Every manifest gone (the rebuilt worker wrote its own meanwhile): a fresh store replays the whole log.
    for m in snaps.manifests()[0]:
        snaps.s3.delete_object(Bucket=snaps.bucket, Key=snaps.manifest_key(m.snapshot_id))
    other = settings.model_copy(update={"dialog_database_prefix": settings.dialog_database_prefix + "x"})
    fresh = DialogWorker.create(other, "east")
    try:
        report = fresh.rebuild()
        assert report.source == "full replay" and report.events_replayed == sum(tail.values())
        assert {s.session_id: s for s in fresh.store.all_states()} == expected
    finally:
        fresh.close()


def test_a_region_uses_its_own_object_store_and_broker(settings: Settings) -> None:
    """North's worker folds north's broker and snapshots into north's object store: nothing of
    east's reaches it, and east sees none of north's snapshots."""
    north = settings.for_region("north")
    assert north.s3_endpoint != settings.s3_endpoint and north.kafka_bootstrap != settings.kafka_bootstrap
    events = make_log(40, seed=7)
    ends = ends_of(publish(north, events), settings.dialog_topic)
    worker = DialogWorker.create(settings, "north")
    try:
        report = worker.rebuild()
        assert report.source == "full replay" and report.events_replayed == len(events)
        manifest = worker.snapshot_now()
        assert worker.positions == ends and manifest.offsets == ends and manifest.region == "north"
    finally:
        worker.close()
    north_snaps = SnapshotStore.from_settings(north)
    east_snaps = SnapshotStore.from_settings(settings.for_region("east"))
    assert [m.snapshot_id for m in north_snaps.manifests()[0]] == [manifest.snapshot_id]
    assert east_snaps.manifests() == ([], [])
    east = DialogWorker.create(settings, "east", snapshots=False)
    try:
        with pytest.raises(DialogError, match="has no partitions in region east"):
            east.rebuild()  # east's broker has no such topic
    finally:
        east.close()


def test_cli_rebuild_and_show(settings: Settings, capsys: pytest.CaptureFixture[str]) -> None:
    events = make_log(30, seed=6)
    publish(settings.for_region("north"), events)  # north's own broker: `--region north` folds it
    parser = argparse.ArgumentParser()
    cli.register(parser.add_subparsers(dest="command"))

    def run(*argv: str) -> int:
        args = parser.parse_args(list(argv))
        return int(args.func(args, settings))

    assert run("dialog", "rebuild", "--region", "north", "--json") == 0
    report = orjson.loads(capsys.readouterr().out)
    assert report["sessions_restored"] == 30 and report["events_replayed"] == len(events)
    assert report["region"] == "north" and report["seconds"] > 0

    sid = events[0].session_id
    assert run("dialog", "show", sid, "--region", "north", "--json") == 0
    shown = SessionState.from_dict(orjson.loads(capsys.readouterr().out))
    assert shown.session_id == sid and shown.applied == sum(e.session_id == sid for e in events)
    assert run("dialog", "show", sid, "--region", "north") == 0
    assert f"session {sid}" in capsys.readouterr().out
    assert run("dialog", "show", "nobody", "--region", "north") == 1
    assert run("dialog", "rebuild", "--region", "north") == 0
    assert "0 events replayed" in capsys.readouterr().out
