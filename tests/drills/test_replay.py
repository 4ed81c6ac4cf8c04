"""`regionsync replay` on the real stack: into a topic (keys, headers, timestamps, origin
headers), dry run, resume after an interruption, into a region (indexer and dialog store), and
bad input refused before anything is touched."""

from __future__ import annotations

import dataclasses
import signal
import subprocess
import sys
import time
from pathlib import Path

import orjson
import psycopg
import pytest
from confluent_kafka import Producer
from confluent_kafka.admin import AdminClient, NewTopic

from dialog.pg_store import PostgresStore
from dialog.reducer import fold
from dialog.state import SessionState
from drills import kafka_io
from indexer.sink import RegionSink
from mirror.status import inbound
from regionsync.kafka import read_topic
from regionsync.pgdb import region_dsn
from regionsync.settings import Settings
from tests.dialog.helpers import make_log, publish

from .conftest import cli, wait_for
from .helpers import drop_document

pytestmark = pytest.mark.integration

BASE_TS = 1_790_000_000_000


def _topic(settings: Settings, name: str, partitions: int = 2) -> str:
    admin = AdminClient({"bootstrap.servers": settings.kafka_bootstrap})
    for future in admin.create_topics([NewTopic(name, num_partitions=partitions, replication_factor=1)]).values():
        future.result(15)
    wait_for(lambda: _has_topic(settings, name), 30, f"topic {name}")
    return name


def _has_topic(settings: Settings, name: str) -> bool:
    try:
        kafka_io.watermarks(settings.kafka(), name)
        return True
    except Exception:  # noqa: BLE001
        return False


def _fill(settings: Settings, topic: str, n: int) -> None:
    producer = Producer({"bootstrap.servers": settings.kafka_bootstrap, "acks": "all"})
    for i in range(n):
        producer.produce(topic, key=f"k{i % 7}".encode(), value=f"v{i}".encode(), partition=i % 2,
                         headers=[("trace", f"t{i}".encode())], timestamp=BASE_TS + i)
    assert producer.flush(30) == 0


def _records(settings: Settings, topic: str) -> list:
    return list(read_topic(settings, topic))


def test_replay_into_a_topic_keeps_records_and_adds_origin(settings: Settings, tmp_path: Path) -> None:
    src, dst = _topic(settings, "drills.src-a"), _topic(settings, "drills.copy-a")
    _fill(settings, src, 40)
    wait_for(lambda: len(_records(settings, src)) == 40, 60, "40 source records")

    out = cli(settings, "replay", src, "--to-topic", dst, "--from-offset", "5", "--dry-run", "--json")
    assert out.returncode == 0, out.stderr
    dry = orjson.loads(out.stdout)
    assert dry["partitions"] == {"0": {"start": 5, "end": 20, "count": 15}, "1": {"start": 5, "end": 20, "count": 15}}
    assert dry["sent"] == 0 and _records(settings, dst) == []

    out = cli(settings, "replay", src, "--to-topic", dst, "--from-offset", "5", "--json",
              "--checkpoint", str(tmp_path / "a.json"))
    assert out.returncode == 0, out.stderr
    assert orjson.loads(out.stdout)["sent"] == 30
    source = {(m.partition(), m.offset()): m for m in _records(settings, src)}
    copied = _records(settings, dst)
    assert len(copied) == 30
    for msg in copied:
        headers = dict(msg.headers())
        origin = source[(int(headers["regionsync-origin-partition"]), int(headers["regionsync-origin-offset"]))]
        assert headers["regionsync-origin-topic"] == src.encode() and headers["regionsync-origin"] == b"replay"
        assert msg.key() == origin.key() and msg.value() == origin.value()
        assert headers["trace"] == dict(origin.headers())["trace"]
        assert msg.timestamp()[1] == origin.timestamp()[1]
        assert msg.partition() == origin.partition() and origin.offset() >= 5


def test_replay_range_by_time(settings: Settings) -> None:
    src = _topic(settings, "drills.src-c")
    _fill(settings, src, 40)  # record i at BASE_TS + i, partition i % 2
    wait_for(lambda: len(_records(settings, src)) == 40, 60, "40 source records")
    out = cli(settings, "replay", src, "--to-topic", "drills.copy-a", "--from-time", str(BASE_TS + 30),
              "--to-time", str(BASE_TS + 36), "--dry-run", "--json")
    assert out.returncode == 0, out.stderr
    # records 30..35: offsets 15..17 of each partition
    assert orjson.loads(out.stdout)["partitions"] == {
        "0": {"start": 15, "end": 18, "count": 3}, "1": {"start": 15, "end": 18, "count": 3}}
    late = cli(settings, "replay", src, "--to-topic", "drills.copy-a", "--from-time", str(BASE_TS + 10_000), "--dry-run")
    assert late.returncode == 2 and "nothing to replay" in late.stderr
    # The same range for real: exactly records 30..35 are copied, each once.
    dst = _topic(settings, "drills.copy-c")
    out = cli(settings, "replay", src, "--to-topic", dst, "--from-time", str(BASE_TS + 30), "--to-time",
              str(BASE_TS + 36), "--json")
    assert out.returncode == 0, out.stderr
    assert orjson.loads(out.stdout)["sent"] == 6
    copied = _records(settings, dst)
    assert sorted(m.value() for m in copied) == sorted(f"v{i}".encode() for i in range(30, 36))
    assert sorted(m.timestamp()[1] for m in copied) == [BASE_TS + i for i in range(30, 36)]


def test_replay_resumes_from_its_checkpoint_after_an_interruption(settings: Settings, tmp_path: Path) -> None:
    src, dst = _topic(settings, "drills.src-b"), _topic(settings, "drills.copy-b")
    _fill(settings, src, 120)
    wait_for(lambda: len(_records(settings, src)) == 120, 60, "120 source records")
    cp = tmp_path / "b.json"
    args = ["replay", src, "--to-topic", dst, "--checkpoint", str(cp), "--json"]
    proc = subprocess.Popen([sys.executable, "-m", "cli", *args, "--rate", "10/s"],
                            env=settings.child_env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        wait_for(lambda: cp.exists() and sum(orjson.loads(cp.read_bytes())["next"].values()) > 0, 120,
                 "the first checkpoint with progress")
        proc.send_signal(signal.SIGTERM)
        _out, err = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 2 and "resume" in err, err
    assert "Traceback" not in err
    sent_first = len(_records(settings, dst))
    assert 0 < sent_first < 120

    out = cli(settings, *args)
    assert out.returncode == 0, out.stderr
    result = orjson.loads(out.stdout)
    assert result["resumed"] is True and result["sent"] == 120 - sent_first
    origins = [(dict(m.headers())["regionsync-origin-partition"], dict(m.headers())["regionsync-origin-offset"])
               for m in _records(settings, dst)]
    assert len(origins) == 120 and len(set(origins)) == 120  # every record once: nothing lost, nothing twice


def test_replay_into_a_region_reapplies_what_it_lost(settings: Settings, db: psycopg.Connection) -> None:
    db.execute("INSERT INTO documents (id, title, body, tags) VALUES (%s, %s, %s, %s)",
               ("rp-1", "Replay me", "A document a region will lose and get back from the log. " * 10, ["rp"]))
    wait_for(lambda: all(_holds(settings, r, "rp-1") for r in settings.regions), 240, "rp-1 in every region")
    drop_document(settings, "east", "rp-1")
    assert not _holds(settings, "east", "rp-1")  # lost: only the replay can bring it back
    before = kafka_io.committed(settings.kafka(), settings.region_group("east"), settings.chunks_topic, [0, 1, 2, 3])

    refused = cli(settings, "replay", settings.chunks_topic, "--region", "east")
    assert refused.returncode == 2 and "active member" in refused.stderr and "Traceback" not in refused.stderr
    assert kafka_io.committed(settings.kafka(), settings.region_group("east"), settings.chunks_topic,
                              [0, 1, 2, 3]) == before

    out = cli(settings, "replay", settings.chunks_topic, "--region", "east", "--stop-consumer", "--json")
    assert out.returncode == 0, out.stderr
    result = orjson.loads(out.stdout)
    assert result["applied_to_end"] is True and result["moved"]

    wait_for(lambda: _holds(settings, "east", "rp-1"), 120, "east to hold rp-1 again")


def _holds(settings: Settings, region: str, doc_id: str) -> bool:
    sink = RegionSink.for_region(settings, region)
    try:
        return any(r["doc_id"] == doc_id for r in sink.dump_chunks())
    except Exception:  # noqa: BLE001 - a busy region answers later
        return False
    finally:
        sink.close()


def test_replay_dialog_log_rebuilds_a_standby_store(settings: Settings) -> None:
    """East's turns reach north's copy of east's log; north's store then loses those sessions (an
    operator's mistake, a bad restore); a replay of that copy into north folds them back."""
    # Written as east writes now: at its current epoch (the drills before this promoted the regions
    # back and forth; an event of an older epoch is a fenced writer's and is set aside, not folded).
    east_store = PostgresStore.for_region(settings, "east")
    try:
        epoch = max((p.epoch for p in east_store.promotions() if p.region == "east"), default=0)
    finally:
        east_store.close()
    events = [dataclasses.replace(e, origin="east", epoch=epoch) for e in make_log(6, seed=7, prefix="rp")]
    publish(settings, events)
    copy = f"east.{settings.dialog_topic}"

    def north_sessions() -> dict[str, SessionState]:
        store = PostgresStore.for_region(settings, "north")
        try:
            return {s.session_id: s for s in store.all_states() if s.session_id.startswith("rp")}
        finally:
            store.close()

    # Generous: the replicator may still be copying the drills' backlog on a busy machine. The
    # failure names the replication state, to tell a slow copy from a stuck one.
    try:
        wait_for(lambda: north_sessions() == fold(events), timeout=300, what="east's turns folded in north")
    except AssertionError as exc:
        raise AssertionError(f"{exc}; replication into north: {inbound(settings, 'north')}") from exc
    with psycopg.connect(region_dsn(settings, "north"), autocommit=True) as conn:
        conn.execute("DELETE FROM dialog_sessions WHERE session_id LIKE 'rp%'")
    assert north_sessions() == {}
    # Every region runs a dialog worker (a warm standby): moving its positions under it is refused.
    refused = cli(settings, "replay", copy, "--region", "north", "--json")
    assert refused.returncode == 2 and "dialog worker is running" in refused.stderr
    wrong = cli(settings, "replay", "nowhere.topic", "--region", "north", "--json")
    assert wrong.returncode == 2 and copy in wrong.stderr  # says which logs north folds
    out = cli(settings, "replay", copy, "--region", "north", "--stop-consumer", "--json")
    assert out.returncode == 0, out.stderr
    assert north_sessions() == fold(events)


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["replay", "no.such.topic", "--to-topic", "x"], "unknown topic"),
        (["replay", "regionsync.doc-chunks", "--region", "south"], "unknown region"),
        (["replay", "regionsync.doc-chunks", "--region", "east", "--from-offset", "999999999"], "past the end"),
        (["replay", "regionsync.doc-chunks", "--to-topic", "no.such.target"], "unknown topic"),
        (["reconcile", "--region", "south"], "unknown region"),
    ],
)
def test_bad_input_is_refused_before_anything_is_touched(settings: Settings, args: list[str], message: str) -> None:
    group = settings.region_group("east")

    def committed() -> dict[int, int | None]:
        return kafka_io.committed(settings.kafka(), group, settings.chunks_topic, [0, 1, 2, 3])

    # East's indexer may still be committing what an earlier test sent: compare from a quiet moment.
    seen: list[dict[int, int | None]] = [committed()]

    def quiet() -> bool:
        time.sleep(2.0)
        seen.append(committed())
        return seen[-1] == seen[-2]

    wait_for(quiet, 120, "east's indexer to stop committing")
    before = seen[-1]
    out = cli(settings, *args)
    assert out.returncode == 2, out.stdout + out.stderr
    assert message in out.stderr and "Traceback" not in out.stderr
    assert committed() == before
