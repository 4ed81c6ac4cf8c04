"""When has a change reached every region? Read off the chunks topic and the regions' offsets.

A region has applied a document change when its indexer's committed offset has passed the record
that carries the change: the indexer commits a batch only after ``RegionSink.apply`` returned,
i.e. after the rows are in that region's Milvus (whose version guard means the region then holds
that version or a newer one). The source region's indexer reads the chunks topic itself; every
other region's reads its copy on its own broker (``east.regionsync.doc-chunks``, brought by the
replicator: :func:`mirror.policy.chunks_topic_in`), where offsets are the copy's own (a
replicator that crashed mid-batch copies some records twice). So the bench

1. tails the chunks topic from the beginning in a background thread and notes, per document,
   each record's coordinates, Debezium commit time (``source.ts_ms``), op, and how many vectors
   the change agent computed for it (``embedded``); it also tails the Debezium topic for the
   time each change event was written there (its CreateTime), so that a latency can be split
   into its stages (Debezium, change agent, indexers);
2. tails each other region's copy, and notes where the first copy of each source record landed
   (its provenance headers name the source partition and offset);
3. after making a set of changes at wall time ``t0``, finds for every changed document its newest
   record whose source commit time is >= ``t0`` (so an older record of the same document never
   counts), and
4. polls each region's committed offsets on its own broker (a read of the group's offsets,
   without joining the group) until they have passed all those records (in another region: their
   copies). The moment a poll sees it is the region's completion time: late by at most the poll
   interval plus one broker round trip, never early. A region's time includes the replication.

Reading committed offsets is one cheap broker request per region and poll; polling every
region's Milvus for 20,000 documents instead would load the very servers being measured.
Everything here runs on one machine, so Postgres' commit timestamps and this process' clock are
the same clock.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Collection, Iterable
from dataclasses import dataclass, field
from functools import partial

import orjson
from confluent_kafka import OFFSET_BEGINNING, Consumer, TopicPartition

from bench.retry import Retries
from mirror import policy
from mirror.provenance import provenance
from regionsync.kafka import new_consumer
from regionsync.settings import Settings

log = logging.getLogger(__name__)


class TrackerTimeout(TimeoutError):
    pass


@dataclass(frozen=True)
class Seen:
    """One record of the chunks topic, as the bench needs it (vectors are not decoded)."""

    doc_id: str
    version: int | None
    op: str
    partition: int
    offset: int
    embedded: int
    chunks: int
    produced_ms: int
    ts_ms: int | None  # the source's commit time (Debezium source.ts_ms)
    seen_s: float  # when this process read it
    source: tuple[str, int, int] | None = None  # (topic, partition, offset) of the source event


@dataclass
class Applied:
    """Outcome of :meth:`Tracker.wait_applied`."""

    records: dict[str, Seen]  # doc id -> the record that carries the change
    region_done_s: dict[str, float] = field(default_factory=dict)  # wall time each region finished

    @property
    def done_s(self) -> float:
        return max(self.region_done_s.values())

    @property
    def embedded(self) -> int:
        return sum(r.embedded for r in self.records.values())


class Tracker:
    def __init__(self, settings: Settings, poll_s: float = 0.05, retries: Retries | None = None) -> None:
        self.settings = settings
        self.poll_s = poll_s
        self.retries = retries or Retries()
        self._source = settings.source_region
        self._by_doc: dict[str, list[Seen]] = {}
        self._log: list[Seen] = []  # every record, in the order read (wait_applied scans only the new ones)
        self._event_ms: dict[tuple[str, int, int], int] = {}
        # Per other region: (source partition, source offset) -> (partition, offset) of its first copy there.
        self._copies: dict[str, dict[tuple[int, int], tuple[int, int]]] = {
            r: {} for r in settings.others(self._source)}
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._threads: list[threading.Thread] = []
        self._records = 0
        self._partitions: dict[str, list[int]] = {}
        self._tail = self._reader(self._source, f"regionsync-bench-tail-{time.monotonic_ns()}")
        self._copy_tails = {r: self._reader(r, f"regionsync-bench-tail-{time.monotonic_ns()}") for r in self._copies}
        # Each region's group id without subscribe(), on its own broker: reads its offsets, never joins it.
        self._groups = {region: self._reader(region, settings.region_group(region)) for region in settings.regions}

    def _reader(self, region: str, group: str) -> Consumer:
        kafka = self.settings.kafka(region)
        return new_consumer(kafka.client({"group.id": group, "enable.auto.commit": False,
                                          "fetch.wait.max.ms": kafka.fetch_wait_max_ms}))

    def topic(self, region: str) -> str:
        """The chunks topic as ``region``'s indexer reads it (the source's, or its copy)."""
        return policy.chunks_topic_in(self.settings, region)

    # ------------------------------------------------------------------ lifecycle

    def start(self) -> Tracker:
        for region in self.settings.regions:
            topic, reader = self.topic(region), self._groups[region]
            meta = reader.list_topics(topic, timeout=10).topics.get(topic)
            if meta is None or meta.error is not None:
                raise RuntimeError(f"chunks topic {topic} does not exist in region {region}")
            self._partitions[region] = sorted(meta.partitions)
        topic = self.settings.chunks_topic
        assign = [TopicPartition(topic, p, OFFSET_BEGINNING) for p in self._partitions[self._source]]
        cdc = self.settings.cdc_topic
        cdc_meta = self._tail.list_topics(cdc, timeout=10).topics.get(cdc)
        if cdc_meta is not None and cdc_meta.error is None:
            assign += [TopicPartition(cdc, p, OFFSET_BEGINNING) for p in sorted(cdc_meta.partitions)]
        self._tail.assign(assign)
        self._threads.append(threading.Thread(target=self._run, name="bench-tracker", daemon=True))
        for region, reader in self._copy_tails.items():
            reader.assign([TopicPartition(self.topic(region), p, OFFSET_BEGINNING) for p in self._partitions[region]])
            self._threads.append(threading.Thread(target=self._run_copies, args=(region, reader),
                                                  name=f"bench-tracker-{region}", daemon=True))
        for thread in self._threads:
            thread.start()
        return self

    def close(self) -> None:
        self._stop.set()
        for thread in self._threads:
            thread.join(10)
        for consumer in [self._tail, *self._copy_tails.values(), *self._groups.values()]:
            consumer.close()

    def _run(self) -> None:
        while not self._stop.is_set():
            batch = self._tail.consume(2000, 0.1)
            now = time.time()
            seen: list[Seen] = []
            events: dict[tuple[str, int, int], int] = {}
            for msg in batch:
                value = msg.value()
                if msg.error() is not None or value is None:
                    continue
                if msg.topic() != self.settings.chunks_topic:
                    events[(str(msg.topic()), int(msg.partition() or 0), int(msg.offset() or 0))] = msg.timestamp()[1]
                    continue
                try:
                    data = orjson.loads(value)
                    source = data.get("source") or {}
                    seen.append(
                        Seen(
                            doc_id=str(data["doc_id"]),
                            version=data.get("version"),
                            op=str(data.get("op")),
                            partition=int(msg.partition() or 0),
                            offset=int(msg.offset() or 0),
                            embedded=int(data.get("embedded") or 0),
                            chunks=len(data.get("chunks") or ()),
                            produced_ms=int(data.get("produced_ms") or 0),
                            ts_ms=source.get("ts_ms"),
                            seen_s=now,
                            source=(str(source.get("topic")), int(source.get("partition") or 0),
                                    int(source.get("offset") or 0)) if source.get("topic") else None,
                        )
                    )
                except (orjson.JSONDecodeError, KeyError, TypeError, ValueError):
                    continue
            if events:
                with self._lock:
                    self._event_ms.update(events)
            if seen:
                with self._lock:
                    for rec in seen:
                        self._by_doc.setdefault(rec.doc_id, []).append(rec)
                    self._log.extend(seen)
                    self._records += len(seen)

    def _run_copies(self, region: str, reader: Consumer) -> None:
        copies = self._copies[region]
        while not self._stop.is_set():
            found: list[tuple[tuple[int, int], tuple[int, int]]] = []
            for msg in reader.consume(2000, 0.1):
                if msg.error() is not None:
                    continue
                origin = provenance(msg.headers())
                if origin is not None and origin.topic == self.settings.chunks_topic:
                    found.append(((origin.partition, origin.offset), (int(msg.partition() or 0), int(msg.offset() or 0))))
            if found:
                with self._lock:
                    for source_at, copy_at in found:
                        copies.setdefault(source_at, copy_at)  # the first copy: later ones are duplicates

    # ------------------------------------------------------------------ queries

    @property
    def records_seen(self) -> int:
        return self._records

    def newest_since(self, doc_ids: Iterable[str], since_ms: int) -> dict[str, Seen]:
        """Per document, its newest record whose source commit time is >= ``since_ms``."""
        out: dict[str, Seen] = {}
        with self._lock:
            for doc_id in doc_ids:
                for rec in reversed(self._by_doc.get(doc_id, ())):
                    if rec.ts_ms is not None and rec.ts_ms >= since_ms:
                        out[doc_id] = rec
                        break
        return out

    def source_event_ms(self, rec: Seen) -> int | None:
        """When the record's source event was written to its topic (e.g. by Debezium)."""
        if rec.source is None:
            return None
        with self._lock:
            return self._event_ms.get(rec.source)

    def committed(self, region: str) -> dict[int, int]:
        """The region's indexer group's committed offsets on its chunks topic (on its own broker)."""
        topic = self.topic(region)
        parts = [TopicPartition(topic, p) for p in self._partitions[region]]
        return {tp.partition: tp.offset for tp in self._groups[region].committed(parts, timeout=10)}

    def needed(self, region: str, records: Collection[Seen]) -> dict[int, int] | None:
        """Highest offset per partition the region's indexer must commit past to have applied
        ``records``; None while one of them has not been copied into the region yet."""
        need: dict[int, int] = {}
        if region == self._source:
            for rec in records:
                need[rec.partition] = max(need.get(rec.partition, -1), rec.offset)
            return need
        with self._lock:
            copies = self._copies[region]
            for rec in records:
                at = copies.get((rec.partition, rec.offset))
                if at is None:
                    return None
                need[at[0]] = max(need.get(at[0], -1), at[1])
        return need

    def wait_applied(self, doc_ids: Collection[str], since_s: float, timeout: float) -> Applied:
        """Block until every region has applied a change of each of ``doc_ids`` committed at or
        after ``since_s`` (wall time, taken before the first commit). Raises TrackerTimeout.

        Polls often at first and then every 0.5% of the time waited so far (at most every 0.5 s):
        the completion time is late by at most that, and the bench's own polling stays cheap
        beside the pipeline it measures."""
        since_ms = int(since_s * 1000)
        started = time.monotonic()
        deadline = started + timeout
        wanted = set(doc_ids)
        records: dict[str, Seen] = {}
        done: dict[str, float] = {}
        cursor = 0
        while True:
            if len(records) < len(wanted):
                with self._lock:
                    new, cursor = self._log[cursor:], len(self._log)
                for rec in new:  # in log order: a later record of a document replaces an earlier one
                    if rec.doc_id in wanted and rec.ts_ms is not None and rec.ts_ms >= since_ms:
                        records[rec.doc_id] = rec
            if len(records) == len(wanted):
                # Highest record offset per partition (of the region's own topic): a region is done
                # once it committed past it.
                for region in self.settings.regions:
                    if region in done:
                        continue
                    need = self.needed(region, list(records.values()))
                    if need is None:
                        continue
                    committed = self.retries.call(f"committed offsets ({region})", partial(self.committed, region))
                    if all(committed.get(p, -1) > off for p, off in need.items()):
                        done[region] = time.time()
                if len(done) == len(self.settings.regions):
                    return Applied(records, done)
            if time.monotonic() > deadline:
                missing = len(wanted) - len(records)
                raise TrackerTimeout(
                    f"after {timeout:.0f}s: {missing} of {len(wanted)} changes not yet on the chunks topic; "
                    f"regions done: {sorted(done) or 'none'}"
                )
            time.sleep(min(0.5, max(self.poll_s, 0.005 * (time.monotonic() - started))))
