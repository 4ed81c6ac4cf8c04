"""When has a change reached every region? Read off the chunks topic and the regions' offsets.

A region has applied a document change when its indexer's committed offset on the chunks topic
has passed the record that carries the change: the indexer commits a batch only after
``RegionSink.apply`` returned, i.e. after the rows are in that region's Milvus (whose version
guard means the region then holds that version or a newer one). So the bench

1. tails the chunks topic from the beginning in a background thread and notes, per document,
   each record's coordinates, Debezium commit time (``source.ts_ms``), op, and how many vectors
   the change agent computed for it (``embedded``); it also tails the Debezium topic for the
   time each change event was written there (its CreateTime), so that a latency can be split
   into its stages (Debezium, change agent, indexers);
2. after making a set of changes at wall time ``t0``, finds for every changed document its newest
   record whose source commit time is >= ``t0`` (so an older record of the same document never
   counts), and
3. polls each region's committed offsets (a read of the group's offsets, without joining the
   group) until they have passed all those records. The moment a poll sees it is the region's
   completion time: late by at most the poll interval plus one broker round trip, never early.

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

from regionsync.bench.retry import Retries
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
        self._by_doc: dict[str, list[Seen]] = {}
        self._log: list[Seen] = []  # every record, in the order read (wait_applied scans only the new ones)
        self._event_ms: dict[tuple[str, int, int], int] = {}
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._records = 0
        self._tail = Consumer(
            {
                "bootstrap.servers": settings.kafka_bootstrap,
                "group.id": f"regionsync-bench-tail-{time.monotonic_ns()}",
                "enable.auto.commit": False,
                "fetch.wait.max.ms": settings.fetch_wait_max_ms,
            }
        )
        self._groups = {
            region: Consumer(
                {
                    "bootstrap.servers": settings.kafka_bootstrap,
                    # The region's group id without subscribe(): reads its offsets, never joins it.
                    "group.id": settings.region_group(region),
                    "enable.auto.commit": False,
                }
            )
            for region in settings.regions
        }

    # ------------------------------------------------------------------ lifecycle

    def start(self) -> Tracker:
        topic = self.settings.chunks_topic
        meta = self._tail.list_topics(topic, timeout=10).topics.get(topic)
        if meta is None or meta.error is not None:
            raise RuntimeError(f"chunks topic {topic} does not exist")
        self._partitions = sorted(meta.partitions)
        assign = [TopicPartition(topic, p, OFFSET_BEGINNING) for p in self._partitions]
        cdc = self.settings.cdc_topic
        cdc_meta = self._tail.list_topics(cdc, timeout=10).topics.get(cdc)
        if cdc_meta is not None and cdc_meta.error is None:
            assign += [TopicPartition(cdc, p, OFFSET_BEGINNING) for p in sorted(cdc_meta.partitions)]
        self._tail.assign(assign)
        self._thread = threading.Thread(target=self._run, name="bench-tracker", daemon=True)
        self._thread.start()
        return self

    def close(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(10)
        self._tail.close()
        for consumer in self._groups.values():
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
        topic = self.settings.chunks_topic
        parts = [TopicPartition(topic, p) for p in self._partitions]
        return {tp.partition: tp.offset for tp in self._groups[region].committed(parts, timeout=10)}

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
                # Highest record offset per partition: a region is done once it committed past it.
                need: dict[int, int] = {}
                for rec in records.values():
                    need[rec.partition] = max(need.get(rec.partition, -1), rec.offset)
                for region in self.settings.regions:
                    if region in done:
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
