"""The replicator on real brokers and databases: everything a region wrote reaches the other,
with its key, value, headers, timestamp and partition; killed -9 in the middle of a batch it
neither skips nor loses a record (it copies some twice); its lag says how far behind it is."""

from __future__ import annotations

import sys
import time
from collections.abc import Iterator

import pytest
from confluent_kafka import Consumer, Producer, TopicPartition

from mirror import policy
from mirror.checkpoints import read_all
from mirror.provenance import provenance
from regionsync.kafka import fetch_ends
from regionsync.pgdb import region_dsn
from regionsync.settings import Settings
from regionsync.settings_parts import KafkaSettings
from stack import procs
from stack.topics import partitions
from tests.stacks import stopped_after

pytestmark = pytest.mark.integration  # starts real services

N = 20_000


def produce(bootstrap: str, topic: str, n: int, start: int = 0) -> None:
    producer = Producer({"bootstrap.servers": bootstrap, "acks": "all", "enable.idempotence": True,
                         "linger.ms": 5, "partitioner": "murmur2_random"})
    for i in range(start, start + n):
        while True:
            try:
                producer.produce(topic, key=f"k{i % 97}".encode(), value=f"v{i}".encode(),
                                 headers=[("app", f"h{i}".encode())], timestamp=1_700_000_000_000 + i)
                break
            except BufferError:
                producer.poll(0.05)
    assert producer.flush(60) == 0


def read_remote(settings: Settings, target: str, topic: str) -> dict[int, list[tuple[int, bytes, bytes, int, bytes]]]:
    """(source offset, key, value, timestamp, app header) per partition, in the target's order."""
    bootstrap = settings.kafka_bootstraps[target]
    remote = policy.remote_topic("east", topic)
    parts = range(partitions(settings, topic))
    ends = fetch_ends(KafkaSettings(bootstrap), [(remote, p) for p in parts])
    consumer = Consumer({"bootstrap.servers": bootstrap, "group.id": "t", "enable.auto.commit": False})
    consumer.assign([TopicPartition(remote, p, 0) for p in parts])
    out: dict[int, list[tuple[int, bytes, bytes, int, bytes]]] = {p: [] for p in parts}
    at = dict.fromkeys(parts, 0)
    deadline = time.monotonic() + 120
    while any(at[p] < ends[(remote, p)] for p in parts) and time.monotonic() < deadline:
        for m in consumer.consume(5000, 0.2):
            if m.error():
                continue
            prov = provenance(m.headers())
            assert prov is not None and prov.region == "east" and prov.topic == topic and prov.partition == m.partition()
            app = dict(m.headers() or [])["app"]
            out[m.partition()].append((prov.offset, m.key(), m.value(), m.timestamp()[1], app))
            at[m.partition()] = m.offset() + 1
    consumer.close()
    return out


def checkpoint(settings: Settings, topic: str) -> int:
    points = read_all(region_dsn(settings, "north")).get("east", {})
    return sum(cp.next_offset for (t, _p), cp in points.items() if t == topic)


@pytest.fixture
def replicator(two_regions: Settings) -> Iterator[list[str]]:
    with stopped_after(two_regions.state_dir) as names:
        yield names


def spawn(settings: Settings, names: list[str], tag: str) -> procs.Proc:
    north = settings.for_region("north")
    proc = procs.spawn(settings.state_dir, f"mirror-test-{tag}",
                       [sys.executable, "-m", "cli.replicator", "--from", "east", "--to", "north"],
                       env=north.child_env())
    names.append(proc.name)
    return proc


def test_a_replicator_killed_mid_batch_neither_skips_nor_loses(two_regions: Settings, replicator: list[str]) -> None:
    s = two_regions
    topic = s.dialog_topic
    produce(s.kafka_bootstraps["east"], topic, N)
    first = spawn(s, replicator, "a")
    procs.wait_until(lambda: checkpoint(s, topic) > 0, 60, "a first checkpoint", first, interval=0.01)
    before = checkpoint(s, topic)
    procs.kill9(s.state_dir, first.name)
    assert before < N, "the kill must land while the backlog is being copied"
    produce(s.kafka_bootstraps["east"], topic, 500, start=N)  # written while it was down
    second = spawn(s, replicator, "b")
    procs.wait_until(lambda: checkpoint(s, topic) >= N + 500, 120, "the replicator to catch up", second)

    copied = read_remote(s, "north", topic)
    source_ends = fetch_ends(s.kafka("east"), [(topic, p) for p in range(partitions(s, topic))])
    total = dupes = 0
    for p, rows in copied.items():
        offsets = [r[0] for r in rows]
        assert set(offsets) == set(range(source_ends[(topic, p)])), f"partition {p}: a record is missing"
        total += source_ends[(topic, p)]
        dupes += len(offsets) - len(set(offsets))
        # In order: the copies of each source offset appear in source order, a restart going back
        # at most to its checkpoint (what the killed one copied after it is copied again).
        firsts = sorted(set(offsets), key=offsets.index)
        assert firsts == sorted(firsts)
        for _src_offset, key, value, ts, app in rows:
            i = int(value.decode()[1:])
            assert key == f"k{i % 97}".encode() and ts == 1_700_000_000_000 + i and app == f"h{i}".encode()
    assert total == N + 500


def test_lag_is_measured_while_paused_and_gone_once_resumed(two_regions: Settings, replicator: list[str]) -> None:
    from mirror.checkpoints import set_paused
    from mirror.status import inbound

    s = two_regions
    topic = s.control_topic  # a topic of its own for this test (the dialog topic has the first one's records)
    proc = spawn(s, replicator, "c")
    dsn = region_dsn(s, "north")
    procs.wait_until(lambda: inbound(s, "north")["east"]["source_seen_s"] is not None, 60, "a first look", proc)
    set_paused(dsn, "east", True, "test")
    time.sleep(2.5)
    produce(s.kafka_bootstraps["east"], topic, 50)
    procs.wait_until(lambda: inbound(s, "north")["east"]["topics"].get(topic, 0) >= 1, 30, "the lag to show", proc)
    time.sleep(2.0)
    row = inbound(s, "north")["east"]
    assert row["lag_seconds"] >= 2.0  # nothing confirmed complete since the pause
    set_paused(dsn, "east", False)
    procs.wait_until(lambda: inbound(s, "north")["east"]["lag_records"] == 0
                     and inbound(s, "north")["east"]["lag_seconds"] < 2.0, 60, "the copy to catch up", proc)
    assert sum(len(r) for r in read_remote(s, "north", topic).values()) >= 50
