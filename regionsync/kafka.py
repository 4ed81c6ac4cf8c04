"""Where a partition ends, told by the fetch path: the one answer every Kafka-protocol broker gets right.

tansu's S3 storage engine answers ListOffsets(latest) from the newest batch object's *listing
time* (1 s resolution): the base offset of the first batch written in the newest second + 1,
below the real end whenever that second held several batches or one batch of several records,
during normal operation and after a restart alike (tansu-storage/src/dynostore.rs,
``DynoStore::list_offsets``). Its fetch path reads the partition's watermark every time and is
exact. So an end offset here is the high watermark of a fetch response: assign each partition at
its ListOffsets answer (never past the end), wait for the first fetch answer of each (a record,
or the end of the partition), read the watermark it carried. One fetch per partition, whatever
the distance between the two answers (reading on to the end costs one object read per batch on
this engine: tens of batches a second). On Apache Kafka both answers agree.

The fetch asks for as few bytes as the client allows. tansu answers a fetch by reading every
batch object from the offset on until the request's byte budget is spent (one GET each; the
budget is librdkafka's fetch.max.bytes, 50 MB by default), so a fetch started far below the end
(right after a restart ListOffsets can answer 1, STACK.md) reads the whole partition before it
answers: on a loaded machine that outlasted the 30 s a region's failback gives it (seen in CI:
"no fetch answer" for a dialog partition of a region just restarted). One batch is all this needs.

Use it wherever an end matters: lag, "read to the end", a promotion's "caught up".

This module is also the one place where confluent-kafka clients are built (:func:`new_consumer`,
:func:`new_producer`, :func:`new_admin`): whatever every client of the project must carry (client
security settings, defaults) is added here once, not in each of the twenty places that talk to a
broker.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterator, Mapping, Sequence
from typing import Any

from confluent_kafka import Consumer, KafkaError, KafkaException, Producer, TopicPartition
from confluent_kafka.admin import AdminClient

from regionsync.errors import RegionsyncError
from regionsync.settings import Settings
from regionsync.settings_parts import KafkaSettings

TP = tuple[str, int]

log = logging.getLogger(__name__)


def client_config(config: Mapping[str, Any]) -> dict[str, Any]:
    """A client's configuration: the caller's (``bootstrap.servers`` included), with what every
    client of the project carries. Nothing yet; the place for it."""
    if not config.get("bootstrap.servers"):
        raise ValueError("a Kafka client needs bootstrap.servers")
    return dict(config)


def new_consumer(config: Mapping[str, Any]) -> Consumer:
    return Consumer(client_config(config))


def new_producer(config: Mapping[str, Any]) -> Producer:
    return Producer(client_config(config))


def new_admin(config: Mapping[str, Any]) -> AdminClient:
    return AdminClient(client_config(config))


def discard(producer: Producer) -> None:
    """Drop what a producer whose sends were not acknowledged still holds, before it is replaced.

    Why replace it: an idempotent producer whose id the broker no longer knows (a broker that lost
    its state) retries with that id until its message timeout, and every later send too: seen, the
    change agent stalled for good ("1 records unacknowledged" at every flush) and no dialog turn
    could be acknowledged after the broker came back. A new producer gets a new id. What is purged
    here is sent again by the caller's retry, or was never acknowledged to anyone; duplicates are
    absorbed downstream (versions, session seq)."""
    try:
        producer.purge(in_queue=True, in_flight=True, blocking=False)
        producer.flush(0)
    except Exception:  # noqa: BLE001 - it is being thrown away either way
        pass


def renewed(producer: Producer, config: Mapping[str, Any]) -> Producer:
    """A new producer (same configuration) in place of one whose sends were not acknowledged."""
    discard(producer)
    return new_producer(config)


class EndsUnknown(Exception):
    """The broker did not answer in time: no end offset can be given."""


def fetch_ends(kafka: KafkaSettings, tps: Sequence[TP], timeout_s: float = 5.0) -> dict[TP, int]:
    """The end offset (next offset to be written) of each of ``tps`` on ``kafka``'s broker; raises
    :class:`EndsUnknown`."""
    if not tps:
        return {}
    bootstrap = kafka.bootstrap
    consumer = new_consumer(kafka.client({
        "group.id": "regionsync-ends",  # a label: assign only, nothing committed
        "enable.auto.commit": False,
        "enable.partition.eof": True,
        "fetch.wait.max.ms": 20,
        # The least budget librdkafka allows (fetch.max.bytes >= message.max.bytes >= 1000): a
        # few small batches per answer, never the rest of the partition (above).
        "max.partition.fetch.bytes": 1,
        "fetch.max.bytes": 1024,
        "message.max.bytes": 1000,
        "socket.connection.setup.timeout.ms": int(timeout_s * 1000),
    }))
    try:
        deadline = time.monotonic() + timeout_s
        starts: dict[TP, int] = {}
        for topic, p in tps:
            try:
                low, high = consumer.get_watermark_offsets(TopicPartition(topic, p), timeout=timeout_s, cached=False)
            except KafkaException as exc:
                raise EndsUnknown(f"{topic}[{p}] at {bootstrap}: {exc}") from exc
            starts[(topic, p)] = max(int(low), int(high))
        consumer.assign([TopicPartition(t, p, o) for (t, p), o in starts.items()])
        pending = set(starts)
        seen: dict[TP, int] = dict(starts)
        while pending:
            if time.monotonic() > deadline:
                raise EndsUnknown(f"no fetch answer for {sorted(pending)} at {bootstrap} within {timeout_s:.0f}s")
            for msg in consumer.consume(10_000, 0.2):
                tp = (str(msg.topic()), int(msg.partition() or 0))
                err = msg.error()
                if err is None:
                    seen[tp] = max(seen.get(tp, 0), int(msg.offset() or 0) + 1)
                    pending.discard(tp)  # the fetch that brought it carried the watermark
                elif err.code() == KafkaError._PARTITION_EOF:
                    pending.discard(tp)
        out: dict[TP, int] = {}
        for tp in starts:
            _low, high = consumer.get_watermark_offsets(TopicPartition(*tp), cached=True)
            out[tp] = max(int(high), seen[tp])
        return out
    finally:
        consumer.close()


class ReadTimeout(RegionsyncError):
    """A topic was not read to its end in time: what was read is not the whole topic."""


def read_topic(settings: Settings, topic: str, *, timeout: float = 60.0, region: str | None = None) -> Iterator[Any]:
    """Every record of ``topic`` from the beginning, on ``region``'s broker (default: the source
    region's, where the CMS, change and chunks topics live), without joining a group.

    "The end" is where the fetch path says each partition ends when the read starts
    (:func:`regionsync.kafka.fetch_ends`): tansu's ListOffsets answer can be far below the real
    end, so it is not trusted. A partition is read once the consumer passed that end or reported
    EOF at it (an offset without a record, e.g. a transaction marker, is never delivered). Raises
    :class:`ReadTimeout` (after yielding what it read) if that takes longer than ``timeout``.
    """
    kafka = settings.kafka(region or settings.source_region)
    probe = new_consumer(kafka.client({"group.id": "regionsync-read-topic"}))
    try:
        meta = probe.list_topics(topic, timeout=10).topics.get(topic)
    finally:
        probe.close()
    if meta is None or meta.error is not None:
        return
    # A busy broker can take seconds to answer a fetch (seen: > 10 s under a 1,000-change load on 2 cores).
    ends = fetch_ends(kafka, [(topic, p) for p in sorted(meta.partitions)], timeout)
    yield from read_to_end(kafka, ends, timeout=timeout)


class NoAnswer(RegionsyncError):
    """The broker did not answer enough fetches in time: whether a record is there is unknown."""


class FetchCounter:
    """How many Fetch requests a consumer has sent, from librdkafka's statistics. A consumer has
    one fetch in flight per broker, so each new one means the broker answered the previous: a
    count that grows while no record comes is a broker saying "nothing here", a count that stands
    still is a broker that is slow (busy, frozen). Time alone cannot tell the two apart: a loaded
    2-core machine has kept tansu from answering a fetch for more than 10 s."""

    def __init__(self) -> None:
        self.sent = 0
        self.updates = 0

    def __call__(self, stats: str) -> None:
        import orjson

        brokers = orjson.loads(stats).get("brokers") or {}
        self.sent = sum(int((b.get("req") or {}).get("Fetch", 0)) for b in brokers.values())
        self.updates += 1

    def config(self) -> dict[str, Any]:
        return {"statistics.interval.ms": 100, "stats_cb": self}


def probe_offset(consumer: Consumer, counter: FetchCounter, topic: str, partition: int, offset: int, *,
                 answers: int = 3, timeout_s: float = 30.0) -> Any | None:
    """The record at ``offset`` (a message), or None once the broker answered ``answers`` fetches
    there with nothing (or with a later record, or the partition's end); raises :class:`NoAnswer`
    when it did not answer that often within ``timeout_s``. ``consumer`` carries ``counter``'s
    statistics (:meth:`FetchCounter.config`); it is assigned to the partition for the probe only."""
    consumer.assign([TopicPartition(topic, partition, offset)])
    try:
        deadline = time.monotonic() + timeout_s
        seen_update, base = counter.updates, None
        while time.monotonic() < deadline:
            for msg in consumer.consume(1, 0.1):
                err = msg.error()
                if err is None:
                    return msg if int(msg.offset() or 0) == offset else None
                if err.code() == KafkaError._PARTITION_EOF:
                    return None
                # Anything else (an offset out of range after a broker restart, say) tells nothing
                # about this offset; a consumer that reset itself elsewhere would look like a hole.
                raise NoAnswer(f"{topic}[{partition}]@{offset}: {err}")
            if counter.updates > seen_update:  # counts from after the assignment only
                if base is None:
                    base = counter.sent
                elif counter.sent - base > answers:
                    return None
        raise NoAnswer(f"{topic}[{partition}]@{offset}: the broker answered "
                       f"{0 if base is None else counter.sent - base} fetches in {timeout_s:.0f}s")
    finally:
        consumer.unassign()


def read_to_end(kafka: KafkaSettings, ends: Mapping[TP, int], *, timeout: float = 60.0,
                config: Mapping[str, Any] | None = None, hole_after_s: float = 10.0,
                start: Mapping[TP, int] | None = None) -> Iterator[Any]:
    """Every record of each partition in ``ends`` from offset 0 (or its ``start``) up to (not including) its end
    (found with :func:`fetch_ends`). A partition is read once the consumer passed its end or
    reported EOF at or past it: an offset without a record (a transaction marker) is never
    delivered. A tansu killed in the middle of a write can come back with a partition's end past
    its last record and no EOF below it: a partition that brought nothing for ``hole_after_s`` is
    probed where it stands (:func:`probe_offset`), and counts as read only if the broker answers
    there with nothing; a broker that is merely slow is waited for. Raises :class:`ReadTimeout`
    (after yielding what it read) if reading takes longer than ``timeout``, naming each
    partition's (reached, end)."""
    first = {tp: (start or {}).get(tp, 0) for tp in ends}
    wanted = {tp: end for tp, end in ends.items() if end > first[tp]}
    if not wanted:
        return
    bootstrap = kafka.bootstrap
    client = kafka.client({
        "group.id": f"regionsync-read-{time.monotonic_ns()}",  # a label: assign only, nothing committed
        "enable.auto.commit": False,
        "enable.partition.eof": True,
        "fetch.wait.max.ms": kafka.fetch_wait_max_ms,
        "fetch.message.max.bytes": 16 * 1024 * 1024,
        **(config or {}),
    })
    consumer = new_consumer(client)
    prober: tuple[Consumer, FetchCounter] | None = None
    try:
        consumer.assign([TopicPartition(t, p, first[(t, p)]) for t, p in wanted])
        reached = {tp: first[tp] for tp in wanted}  # next offset to read, or where EOF was reported
        deadline = time.monotonic() + timeout
        moved = dict.fromkeys(wanted, time.monotonic())  # when each partition last brought something
        while any(reached[tp] < end for tp, end in wanted.items()):
            now = time.monotonic()
            if now > deadline:
                short = {f"{t}[{p}]": (reached[(t, p)], end) for (t, p), end in wanted.items() if reached[(t, p)] < end}
                raise ReadTimeout(f"at {bootstrap}: partitions not read to their end in {timeout:.0f}s "
                                  f"(reached, end): {short}")
            for tp, end in wanted.items():
                if reached[tp] < end and now - moved[tp] > hole_after_s:
                    if prober is None:
                        counter = FetchCounter()
                        prober = (new_consumer({**client, **counter.config(), "enable.partition.eof": False,
                                                "auto.offset.reset": "error"}), counter)
                    try:
                        found = probe_offset(prober[0], prober[1], tp[0], tp[1], reached[tp],
                                             timeout_s=max(1.0, min(30.0, deadline - time.monotonic())))
                    except NoAnswer as exc:
                        log.info("%s at %s: still waiting: %s", tp, bootstrap, exc)
                        found = True
                    if found is None:
                        log.warning("%s[%d] at %s: no record between offset %d and its end %d (the broker answers "
                                    "there with nothing): read", tp[0], tp[1], bootstrap, reached[tp], end)
                        reached[tp] = end
                    moved[tp] = time.monotonic()  # a record there (or no answer yet): the fetch goes on
            for msg in consumer.consume(5000, 0.2):
                err = msg.error()
                tp = (str(msg.topic()), int(msg.partition() or 0))
                if tp not in reached:
                    continue
                moved[tp] = time.monotonic()
                if err is None:
                    offset = int(msg.offset() or 0)
                    reached[tp] = max(reached[tp], offset + 1)
                    if offset < wanted[tp]:
                        yield msg
                elif err.code() == KafkaError._PARTITION_EOF:
                    reached[tp] = max(reached[tp], int(msg.offset() or 0))
    finally:
        consumer.close()
        if prober is not None:
            prober[0].close()
