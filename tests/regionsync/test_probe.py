"""Is there a record at this offset? On a real broker (tansu on its object store): a record is
found; a broker that answers fetches with nothing says "nothing" within a second; a frozen broker
(SIGSTOP: a loaded machine's worst case) says nothing at all, and the probe does not take its
silence for an empty log. read_to_end waits for a frozen broker instead of calling the rest of
the partition a hole (the bug: under load, a 10 s pause cut a reference read short)."""

from __future__ import annotations

import gc
import signal
import threading
import time
from collections.abc import Iterator

import pytest
from confluent_kafka import Producer
from confluent_kafka.admin import AdminClient, NewTopic

from regionsync.kafka import FetchCounter, NoAnswer, fetch_ends, new_consumer, probe_offset, read_to_end
from regionsync.settings import Settings
from stack import broker, procs, seaweed
from tests.stacks import free_settings

pytestmark = pytest.mark.integration  # a real broker

REGION = "east"


@pytest.fixture(scope="module")
def kafka(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Settings]:
    settings = free_settings(tmp_path_factory.mktemp("probe"), regions=[REGION])
    seaweed.start(settings, REGION)
    try:
        broker.start(settings, REGION)
        try:
            yield settings
        finally:
            gc.collect()
            broker.stop(settings, REGION)
    finally:
        seaweed.stop(settings, REGION)


def topic_with(settings: Settings, name: str, records: int, batches: bool = False) -> None:
    admin = AdminClient(settings.kafka().client())
    for future in admin.create_topics([NewTopic(name, 1, 1)]).values():
        future.result(15)
    producer = Producer(settings.kafka().producer())
    for i in range(records):
        producer.produce(name, key=b"k", value=f"v{i}".encode(), partition=0)
        if batches:  # a batch per record: a small fetch brings one at a time
            producer.flush(30)
    assert producer.flush(30) == 0


def prober(settings: Settings) -> tuple[object, FetchCounter]:
    counter = FetchCounter()
    consumer = new_consumer(settings.kafka().client({"group.id": "probe", "enable.auto.commit": False,
                                                     "enable.partition.eof": False, **counter.config()}))
    return consumer, counter


def broker_pid(settings: Settings) -> int:
    proc = procs.read_proc(settings.state_dir, broker.proc_name(REGION))
    assert proc is not None
    return proc.pid


def test_a_record_is_found_and_nothing_is_told_apart_from_silence(kafka: Settings) -> None:
    topic_with(kafka, "probe-a", 3)
    consumer, counter = prober(kafka)
    try:
        found = probe_offset(consumer, counter, "probe-a", 0, 1)  # type: ignore[arg-type]
        assert found is not None and found.value() == b"v1"
        started = time.monotonic()
        assert probe_offset(consumer, counter, "probe-a", 0, 3) is None  # type: ignore[arg-type]
        assert time.monotonic() - started < 5  # the broker said so at once
        pid = broker_pid(kafka)
        import os

        os.kill(pid, signal.SIGSTOP)
        try:
            with pytest.raises(NoAnswer):
                probe_offset(consumer, counter, "probe-a", 0, 3, timeout_s=3.0)  # type: ignore[arg-type]
        finally:
            os.kill(pid, signal.SIGCONT)
    finally:
        consumer.close()  # type: ignore[attr-defined]


def test_read_to_end_waits_for_a_frozen_broker_instead_of_cutting_the_read(kafka: Settings) -> None:
    import os

    topic_with(kafka, "probe-b", 200, batches=True)
    ends = fetch_ends(kafka.kafka(), [("probe-b", 0)], 30)
    assert ends == {("probe-b", 0): 200}
    pid = broker_pid(kafka)
    small = {"max.partition.fetch.bytes": 1, "fetch.max.bytes": 1024, "message.max.bytes": 1000}
    read = []
    for msg in read_to_end(kafka.kafka(), ends, timeout=60, hole_after_s=2.0, config=small):
        if not read:  # the read is under way: the broker stops answering for longer than hole_after_s
            os.kill(pid, signal.SIGSTOP)
            threading.Timer(6.0, os.kill, (pid, signal.SIGCONT)).start()
        read.append(msg.value())
    assert read == [f"v{i}".encode() for i in range(200)]


def test_read_to_end_from_a_start_offset_reads_only_the_rest(kafka: Settings) -> None:
    topic_with(kafka, "probe-c", 10)
    ends = fetch_ends(kafka.kafka(), [("probe-c", 0)], 30)
    read = [m.value() for m in read_to_end(kafka.kafka(), ends, start={("probe-c", 0): 6}, timeout=60)]
    assert read == [f"v{i}".encode() for i in range(6, 10)]
    assert list(read_to_end(kafka.kafka(), ends, start={("probe-c", 0): 10}, timeout=60)) == []
