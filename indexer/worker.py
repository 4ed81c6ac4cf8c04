"""A region's indexer: chunks topic -> that region's Milvus, at least once, never skipping.

One process per region, on its region's broker: the source region's indexer reads the chunks
topic itself, every other region's its copy (``east.regionsync.doc-chunks``, brought by the
replicator: :func:`mirror.policy.chunks_topic_in`). Each has its own consumer group
(``Settings.region_group``) with its offsets on its own broker, so a dead or slow region blocks no
other and catches up from its own committed offsets after a restart.

The loop: consume a batch; decode and check every record (poison -> dead-letter topic with the
reason and the original bytes, then carry on); ``sink.apply`` the rest; commit the batch's
offsets synchronously, and only after the apply returned. If the region's Milvus is down the
same batch is retried with backoff (logged once per outage): nothing is committed, skipped or
dropped meanwhile. A crash anywhere means redelivery from the last commit, which the sink's
version guard makes harmless.

Run: ``python -m indexer.worker --region east`` (settings from ``REGIONSYNC_*`` variables).
"""

from __future__ import annotations

import argparse
import logging
import signal
import sys
import threading
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Any

from confluent_kafka import (
    Consumer,
    KafkaError,
    KafkaException,
    Message,
    Producer,
    TopicCollection,
    TopicPartition,
)

from indexer import metrics
from indexer.clients import make_consumer, make_dlq_producer
from indexer.decode import decode
from indexer.errors import IndexerError
from indexer.hold import hold
from indexer.ports import IndexWriter
from indexer.sink import RegionSink
from mirror import policy
from regionsync.kafka import discard, new_admin
from regionsync.metrics import serve_metrics
from regionsync.settings import Settings
from streams.deadletter import DeadLetter
from streams.events import DocRecord
from streams.heal import HealRequest

log = logging.getLogger(__name__)


class DeadLetterError(IndexerError):
    """The broker did not acknowledge every dead letter or heal request; the batch is retried,
    not committed."""


@dataclass
class WorkerStats:
    batches: int = 0
    records: int = 0  # records handed to the sink
    dead_letters: int = 0
    stale: int = 0
    meta_missing: int = 0
    heal_requests: int = 0  # documents this region lacked and asked the change agent for
    apply_retries: int = 0
    outages: int = 0
    commits: int = 0
    commit_failures: int = 0
    flushes: int = 0


class RegionIndexer:
    """Consumes the chunks topic into one region's :class:`RegionSink`.

    ``run()`` blocks until :meth:`stop` (SIGTERM in the entry point) or, for tests and drills,
    until nothing arrived for ``max_idle_s`` seconds after partitions were assigned. A stop while
    a batch waits for Milvus returns without committing it: the next run gets it again.
    """

    def __init__(
        self,
        settings: Settings,
        region: str,
        sink: IndexWriter | None = None,
        consumer: Consumer | None = None,
        producer: Producer | None = None,
        *,
        batch_size: int | None = None,
        poll_timeout_s: float = 0.5,
        retry_initial_s: float = 0.2,
        retry_max_s: float = 5.0,
        flush_idle_s: float = 1.0,
        flush_min_interval_s: float = 10.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        settings = settings.for_region(region)
        self.settings = settings
        self.region = region
        self.topic = policy.chunks_topic_in(settings, region)
        self.stage = f"indexer:{region}"
        self.sink: IndexWriter = sink or RegionSink.for_region(settings, region)
        self.consumer = consumer or make_consumer(settings, region)
        self._own_producer = producer is None
        self.producer = producer or make_dlq_producer(settings)
        # Only with our own consumer (tests hand in fakes): the topic's identity guards commits.
        self._admin = new_admin(settings.kafka().client()) if consumer is None else None
        self.batch_size = batch_size or settings.batch_max_events
        self.poll_timeout_s = poll_timeout_s
        self.retry_initial_s = retry_initial_s
        self.retry_max_s = retry_max_s
        self.flush_idle_s = flush_idle_s
        self.flush_min_interval_s = flush_min_interval_s
        self.clock = clock
        self.stats = WorkerStats()
        self._dirty = False  # written since the last flush
        self._last_flush = float("-inf")
        self._stop = threading.Event()
        self._assigned_at: float | None = None
        self._subscribed = False
        self._warned: set[str] = set()

    # ------------------------------------------------------------------ lifecycle

    def stop(self) -> None:
        self._stop.set()

    def close(self) -> None:
        """Leave the group (offsets are already committed) and release clients."""
        try:
            self.consumer.close()
        except (KafkaException, RuntimeError) as exc:
            log.debug("closing consumer: %s", exc)
        self.producer.flush(10)
        self.sink.close()

    def _on_assign(self, consumer: Consumer, partitions: list[TopicPartition]) -> None:
        self._assigned_at = self.clock()
        log.info("%s: assigned %s", self.stage, [p.partition for p in partitions])

    def _on_revoke(self, consumer: Consumer, partitions: list[TopicPartition]) -> None:
        # Every batch is committed before the next poll, so a revoke never loses work.
        log.info("%s: revoked %s", self.stage, [p.partition for p in partitions])

    def run(self, max_idle_s: float | None = None, join_timeout_s: float = 60.0) -> WorkerStats:
        if not self._subscribed:
            self.consumer.subscribe([self.topic], on_assign=self._on_assign, on_revoke=self._on_revoke)
            self._subscribed = True
        started = last_activity = self.clock()
        while not self._stop.is_set():
            messages = self._poll()
            now = self.clock()
            if messages:
                self._process(messages)
                last_activity = self.clock()
                continue
            if self._dirty and now - last_activity >= self.flush_idle_s:
                self._flush_if_due(now)
            if max_idle_s is None:
                continue
            if self._assigned_at is not None:
                if now - max(last_activity, self._assigned_at) >= max_idle_s:
                    break
            elif now - started >= join_timeout_s:
                log.warning("%s: no partitions assigned after %.0fs; giving up", self.stage, join_timeout_s)
                break
        return self.stats

    def _flush_if_due(self, now: float) -> None:
        # Once the topic goes quiet, seal the new rows so searches stop scanning them one by one
        # (see RegionSink.flush); at most every flush_min_interval_s (Milvus rate-limits flush).
        if now - self._last_flush < self.flush_min_interval_s:
            return
        self._last_flush = now
        try:
            self.sink.flush()
            self._dirty = False
            self.stats.flushes += 1
        except IndexerError as exc:  # only a search-speed optimisation: never block on it
            log.debug("%s: flush failed: %s", self.stage, exc)

    # ------------------------------------------------------------------ one batch

    def _poll(self) -> list[Message]:
        # Block for the first message (returns as soon as one arrives), then take what else is
        # already fetched, without waiting: a change that arrives alone goes straight through.
        # Only a batch that is filling (more came with the first) waits, up to the window, for
        # the rest: under load that makes fewer, larger Milvus writes.
        first = self.consumer.poll(self.poll_timeout_s)
        if first is None:
            return []
        batch = [first]
        if self.batch_size > 1:
            more = self.consumer.consume(self.batch_size - 1, timeout=0)
            batch += more
            if more and len(batch) < self.batch_size:
                batch += self.consumer.consume(self.batch_size - len(batch), timeout=self.settings.batch_window_s)
        good = []
        for msg in batch:
            err = msg.error()
            if err is None:
                good.append(msg)
            elif err.code() != KafkaError._PARTITION_EOF:
                self._warn_once(f"consume:{err.code()}", "%s: consumer error: %s", self.stage, err)
        return good

    def _process(self, messages: Sequence[Message]) -> bool:
        """Apply one batch and commit it. False if stopped before the batch could be applied."""
        records: list[DocRecord] = []
        letters: list[DeadLetter] = []
        positions: dict[tuple[str, int], int] = {}
        incarnation = self._topic_id()
        for msg in messages:
            topic, partition, offset = str(msg.topic()), int(msg.partition() or 0), int(msg.offset() or 0)
            positions[(topic, partition)] = max(positions.get((topic, partition), -1), offset + 1)
            record, letter = decode(msg, self.stage, self.sink.dim)
            if letter is not None:
                letters.append(letter)
            elif record is not None:
                records.append(record)

        if letters and not self._retry(lambda: self._send_dead_letters(letters), f"dead-lettering {len(letters)}"):
            return False
        if records:
            applied = self._retry(lambda: self.sink.apply(records), f"applying {len(records)} records")
            if applied is None:
                return False
            self._dirty = True
            self.stats.stale += applied.stale
            metrics.RECORDS_SKIPPED.labels(self.region).inc(applied.stale)
            self.stats.meta_missing += len(applied.meta_missing)
            if applied.heal:
                # Sent before the commit: a crash in between redelivers the meta records, which
                # ask again. The change agent answers with the whole document (streams/heal.py).
                requests = [self._heal_request(rec) for rec in applied.heal]
                if not self._retry(lambda: self._send_heal_requests(requests), f"asking to heal {len(requests)}"):
                    return False
                self.stats.heal_requests += len(requests)
                log.info("%s: asked for the whole state of %d documents this region lacks: %s", self.stage,
                         len(requests), [r.doc_id for r in requests][:10])
        if incarnation is not None and self._topic_id() not in (None, incarnation):
            # The chunks topic was recreated while this batch was applied (a broker whose data was
            # lost or wiped, or an operator's delete and create). Its offsets belong to the lost topic:
            # committed into the new one they would make this region skip its first records.
            # Applied is applied; the group starts the new topic from its beginning.
            log.error("%s: %s was recreated while a batch was applied: its offsets are not committed",
                      self.stage, self.topic)
        else:
            self._commit(positions)
        self.stats.batches += 1
        self.stats.records += len(records)
        self.stats.dead_letters += len(letters)
        self._observe(records, len(letters))
        return True

    def _observe(self, records: Sequence[DocRecord], dead_letters: int) -> None:
        now_ms = time.time() * 1000  # wall clock: compared with the source's commit time
        metrics.RECORDS_APPLIED.labels(self.region).inc(len(records))
        metrics.DEAD_LETTERS.labels(self.stage).inc(dead_letters)
        for rec in records:
            committed = rec.source.ts_ms or rec.produced_ms
            if committed:
                metrics.FRESHNESS.labels(self.region).observe(max(0.0, (now_ms - committed) / 1000))

    def _topic_id(self) -> str | None:
        """The chunks topic's id (Kafka's topic ids, KIP-516; a recreated topic has a new one);
        None when the broker does not say."""
        if self._admin is None:
            return None
        try:
            found = self._admin.describe_topics(TopicCollection([self.topic]), request_timeout=5)
            return str(found[self.topic].result(5).topic_id)
        except Exception:  # noqa: BLE001 - the broker is away: nothing to compare, decide next time
            return None

    def _heal_request(self, meta: DocRecord) -> HealRequest:
        assert meta.version is not None  # meta records are validated to carry one
        src = meta.source
        return HealRequest(meta.doc_id, meta.version, src.kind, self.region, int(time.time() * 1000),
                           topic=src.topic, partition=src.partition, offset=src.offset)

    def _send_dead_letters(self, letters: Sequence[DeadLetter]) -> None:
        self._produce_all(
            (self.settings.dlq_topic, letter.key, letter.to_bytes(), list(letter.headers())) for letter in letters
        )

    def _send_heal_requests(self, requests: Sequence[HealRequest]) -> None:
        self._produce_all(
            (self.settings.heal_topic, req.doc_id.encode("utf-8"), req.to_bytes(), []) for req in requests
        )

    def _produce_all(self, messages: Iterable[tuple[str, bytes | None, bytes, list[Any]]]) -> None:
        """Produce and wait until the broker acknowledged every message, or raise."""
        errors: list[str] = []

        def on_delivery(err: KafkaError | None, msg: Message) -> None:
            if err is not None:
                errors.append(str(err))

        for topic, key, value, headers in messages:
            self.producer.produce(topic, key=key, value=value, headers=headers, on_delivery=on_delivery)
        remaining = self.producer.flush(30)
        if remaining or errors:
            if self._own_producer:  # a broker that lost its state no longer knows this one
                discard(self.producer)
                self.producer = make_dlq_producer(self.settings)
            raise DeadLetterError(f"{remaining} unacknowledged, errors: {errors[:3]}")

    def _retry(self, action: Callable[[], Any], what: str) -> Any:
        """Run ``action`` until it succeeds (indexer/hold.py); None if stopped first."""
        return hold(action, what, stage=self.stage, stats=self.stats, stop=self._stop, clock=self.clock,
                    initial_s=self.retry_initial_s, max_s=self.retry_max_s)

    def _commit(self, positions: dict[tuple[str, int], int]) -> None:
        offsets = [TopicPartition(t, p, o) for (t, p), o in sorted(positions.items())]
        try:
            self.consumer.commit(offsets=offsets, asynchronous=False)
            self.stats.commits += 1
            for tp in offsets:
                metrics.APPLIED_OFFSET.labels(self.region, str(tp.partition)).set(tp.offset)
        except KafkaException as exc:
            # E.g. the group rebalanced while Milvus was down (max.poll.interval.ms passed): the
            # new owner starts from the last commit, and re-applying is idempotent.
            self.stats.commit_failures += 1
            log.warning("%s: commit of %s failed (%s); the batch will be redelivered", self.stage, offsets, exc)

    def _warn_once(self, key: str, fmt: str, *args: object) -> None:
        if key not in self._warned:
            self._warned.add(key)
            log.warning(fmt, *args)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m indexer.worker",
        description="Apply the chunks topic to one region's Milvus. Settings come from REGIONSYNC_* variables.",
    )
    parser.add_argument("--region", required=True, help="region to index (one of REGIONSYNC_REGIONS)")
    parser.add_argument("--max-idle", type=float, default=None, help="exit after this many idle seconds")
    parser.add_argument("-v", "--verbose", action="store_true")
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )
    settings = Settings()
    settings.milvus_uri(args.region)  # unknown region: fail now, with the configured ones listed
    settings = settings.for_region(args.region)
    indexer = RegionIndexer(settings, args.region)
    serve_metrics(settings.metrics_port("indexer", args.region), settings.serve_host, f"indexer {args.region}")
    signal.signal(signal.SIGTERM, lambda *_: indexer.stop())
    signal.signal(signal.SIGINT, lambda *_: indexer.stop())
    log.info("indexer for region %s: %s -> %s", args.region, indexer.topic, settings.milvus_uri(args.region))
    try:
        stats = indexer.run(max_idle_s=args.max_idle)
    finally:
        indexer.close()
    log.info("indexer for region %s stopped: %s", args.region, stats)
    return 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
