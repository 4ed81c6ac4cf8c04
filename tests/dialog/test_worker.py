"""The worker on the real stack (in process): dead letters, exactly-once across a crash, rebuild
from snapshot + tail with fallbacks, and the CLI."""

from __future__ import annotations

import argparse
import base64
from collections.abc import Iterable, Mapping

import orjson
import pytest
from confluent_kafka import Consumer, TopicPartition

from dialog import cli
from dialog.events import SessionStarted, UserUtterance, encode, key_of
from dialog.kafka_io import consumer_config, ensure_topic
from dialog.state import SessionState
from dialog.store import StateStore, Stats
from dialog.worker import DialogWorker
from regionsync.settings import Settings

from .helpers import ends_of, fold_log, make_log, produce_raw, publish


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

    def commit(self, states: Iterable[SessionState], offsets: Mapping[int, int], expected: Mapping[int, int], stats: Stats) -> None:
        self._left -= 1
        if self._left == 0:
            raise RuntimeError("simulated crash")
        self._inner.commit(states, offsets, expected, stats)


def test_a_restarted_worker_applies_no_event_twice(settings: Settings) -> None:
    settings = settings.model_copy(update={"dialog_batch_max_events": 150, "dialog_catchup_batch_events": 150})
    events = make_log(300, seed=3)
    ends = ends_of(publish(settings, events))

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
    finally:
        second.close()


def test_rebuild_falls_back_past_a_corrupt_snapshot_then_to_a_full_replay(settings: Settings) -> None:
    settings = settings.model_copy(update={"dialog_batch_max_events": 500, "dialog_catchup_batch_events": 500, "dialog_snapshot_every_events": 1000,
                                           "dialog_snapshot_retention": 10})  # fmt: skip
    events = make_log(400, seed=4)
    ends = ends_of(publish(settings, events))
    primary = DialogWorker.create(settings, "east")
    try:
        primary.rebuild()
        assert primary.snapshots is not None
        manifests, _ = primary.snapshots.manifests()
    finally:
        primary.close()
    assert len(manifests) >= 2
    tail = ends_of(publish(settings, make_log(50, seed=5, prefix="late")), ends)
    expected, _ = fold_log(settings, tail)

    # Newest snapshot truncated: the standby uses the one before, then replays the tail.
    snaps = primary.snapshots
    body = snaps.s3.get_object(Bucket=snaps.bucket, Key=manifests[0].data_key)["Body"].read()
    snaps.s3.put_object(Bucket=snaps.bucket, Key=manifests[0].data_key, Body=body[:100])
    standby = DialogWorker.create(settings, "north")
    try:
        report = standby.rebuild()
        assert report.source == "snapshot" and report.snapshot_id == manifests[1].snapshot_id
        assert len(report.skipped_snapshots) == 1 and manifests[0].snapshot_id in report.skipped_snapshots[0]
        assert report.events_replayed == sum(tail.values()) - manifests[1].position
        assert {s.session_id: s for s in standby.store.all_states()} == expected
        assert standby.store.stats().applied == sum(tail.values())
    finally:
        standby.close()

    # Every manifest gone (the standby wrote its own meanwhile): a fresh region replays the whole log.
    for m in snaps.manifests()[0]:
        snaps.s3.delete_object(Bucket=snaps.bucket, Key=snaps.manifest_key(m.snapshot_id))
    other = settings.model_copy(update={"dialog_database_prefix": settings.dialog_database_prefix + "x"})
    fresh = DialogWorker.create(other, "north")
    try:
        report = fresh.rebuild()
        assert report.source == "full replay" and report.events_replayed == sum(tail.values())
        assert {s.session_id: s for s in fresh.store.all_states()} == expected
    finally:
        fresh.close()


def test_cli_rebuild_and_show(settings: Settings, capsys: pytest.CaptureFixture[str]) -> None:
    events = make_log(30, seed=6)
    publish(settings, events)
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
