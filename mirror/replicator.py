"""The replicator: one region's topics copied into another region's broker.

    python -m cli.replicator --from east --to north     (or: regionsync mirror run ...; the process
                                                        entry is on the roof: it adds dialog's key courier)

Runs in the target region (consume remote, produce local). The loop:

1. consume a batch from the source region's broker (assigned partitions, no consumer group: the
   positions live in the target's database, :mod:`mirror.checkpoints`);
2. produce each record to the remote topic (:func:`mirror.policy.remote_topic`) in the same
   partition, with its key, value, headers and timestamp, plus provenance headers;
3. wait until the target broker acknowledged every copy (idempotent producer, ``acks=all``);
4. write the new positions to the checkpoint table.

A kill -9 between 3 and 4 makes the next run copy that batch again: duplicates, never a gap.
A failed flush renews the producer and goes back to the last checkpoint (the same). While the
source does not answer (its region is down, the link is cut) the replicator keeps trying and
its lag in seconds grows; a pause (``regionsync mirror pause``) stops the copying but not the
measuring. When idle it asks the source for its end offsets every ``mirror_idle_check_s`` and
marks a partition complete up to that moment (the MirrorMaker 2 heartbeat's job: lag stays
measurable when nothing is written).
"""

from __future__ import annotations

import logging
import signal
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from confluent_kafka import (
    TIMESTAMP_NOT_AVAILABLE,
    KafkaError,
    KafkaException,
    Message,
    TopicPartition,
)
from confluent_kafka.admin import NewTopic
from tenacity import RetryCallState, Retrying, wait_exponential

from mirror import metrics, policy
from mirror.checkpoints import TP, CheckpointStore
from mirror.errors import MirrorError, TopicMismatch
from mirror.partition_state import PartitionState
from mirror.provenance import copy_headers
from regionsync.kafka import new_admin, new_consumer, new_producer, renewed
from regionsync.pgdb import region_dsn
from regionsync.settings import Settings

log = logging.getLogger(__name__)

def consumer_config(settings: Settings, source: str, target: str) -> dict[str, Any]:
    # The group id is a label: partitions are assigned, nothing committed. The source is another
    # region's broker: read across the link (mutual TLS through its edge, stack/edge.py).
    return settings.kafka_link(source).reader(f"regionsync-mirror-{source}-{target}", {
        "fetch.message.max.bytes": 16 * 1024 * 1024,
        "socket.connection.setup.timeout.ms": 3000,
        "reconnect.backoff.max.ms": 1000,
    })


def producer_config(settings: Settings, target: str) -> dict[str, Any]:
    return settings.kafka(target).producer({
        "linger.ms": 2,
        "message.max.bytes": 16 * 1024 * 1024,
        "message.timeout.ms": 30000,
    })


# Called with each batch before any of it is copied; raising makes the batch wait and be read
# again from the checkpoint. dialog/courier.py copies the sessions' keys this way (the replicator
# itself knows nothing of what the records mean).
BeforeCopy = Callable[[Sequence[Message]], None]


@dataclass
class Stats:
    batches: int = 0
    records: int = 0
    flush_failures: int = 0
    by_topic: dict[str, int] = field(default_factory=dict)


class Replicator:
    """Copies ``policy.replicated_topics(settings, source, target)`` from ``source`` into ``target``."""

    def __init__(
        self,
        settings: Settings,
        source: str,
        target: str,
        *,
        store: CheckpointStore | None = None,
        clock: Callable[[], float] = time.time,
        before_copy: BeforeCopy | None = None,
    ) -> None:
        if (source, target) not in settings.mirror_pairs():
            raise MirrorError(f"no replication from {source!r} to {target!r}; regions: {', '.join(settings.regions)}")
        self.settings = settings
        self.source, self.target = source, target
        self.topics = policy.replicated_topics(settings, source, target)
        self._clock = clock
        self._before_copy = before_copy
        self.store = store or CheckpointStore(region_dsn(settings, target), source)
        self._consumer = new_consumer(consumer_config(settings, source, target))
        self._pconfig = producer_config(settings, target)
        self._producer = new_producer(self._pconfig)
        self._target_admin = new_admin(settings.kafka(target).client())
        self.parts: dict[TP, PartitionState] = {}
        self.stats = Stats()
        self.stopping = threading.Event()
        self._paused: bool | None = None
        self._checked_pause_at = float("-inf")
        self._probed_at = float("-inf")
        self._started = False
        self._labels = {"source": source, "target": target}

    # ------------------------------------------------------------------ start
    def start(self, timeout_s: float | None = None) -> None:
        """Learn the source's partitions (waiting for the source to answer), create the remote
        topics in the target, and assign every partition at its checkpoint."""
        counts = self._source_partitions(timeout_s)
        self._ensure_remote_topics(counts)
        stored = self.store.load()
        # A partition never confirmed complete counts its lag from now (the first idle probe or copy
        # corrects it), not from 1970.
        started_ms = int(self._clock() * 1000)
        for topic, n in counts.items():
            for p in range(n):
                cp = stored.get((topic, p))
                self.parts[(topic, p)] = PartitionState(
                    next_offset=cp.next_offset if cp else 0, source_end=cp.source_end if cp else 0,
                    fresh_ms=cp.fresh_ms if cp else started_ms, seen_ms=cp.seen_ms if cp else 0,
                )
        self._assign()
        for (topic, p), state in self.parts.items():
            # Computed when scraped, from the last moment the partition was known complete: if this
            # loop hangs while /metrics still answers, the lag goes on growing (and the alert fires).
            metrics.LAG_SECONDS.labels(self.source, self.target, topic, str(p)).set_function(self._lag_of(state))
        self._started = True
        log.info("replicator %s -> %s: %s from %s", self.source, self.target, ", ".join(self.topics),
                 {f"{t}[{p}]": s.next_offset for (t, p), s in sorted(self.parts.items())})

    def _source_partitions(self, timeout_s: float | None) -> dict[str, int]:
        deadline = None if timeout_s is None else time.monotonic() + timeout_s
        while True:
            try:
                meta = self._consumer.list_topics(timeout=5)
                counts = {t: len(meta.topics[t].partitions) for t in self.topics
                          if t in meta.topics and meta.topics[t].error is None and meta.topics[t].partitions}
                missing = [t for t in self.topics if t not in counts]
                if not missing:
                    metrics.SOURCE_UP.labels(**self._labels).set(1)
                    return counts
                why = f"topics {missing} do not exist there yet"
            except KafkaException as exc:
                why = str(exc)
            metrics.SOURCE_UP.labels(**self._labels).set(0)
            if deadline is not None and time.monotonic() > deadline:
                raise MirrorError(f"region {self.source}'s broker: {why}")
            log.warning("replicator %s -> %s: waiting for the source: %s", self.source, self.target, why)
            if self.stopping.wait(2.0):
                raise MirrorError("stopped before the source answered")

    def _ensure_remote_topics(self, counts: dict[str, int]) -> None:
        meta = self._target_admin.list_topics(timeout=15)
        wanted = []
        for topic, n in counts.items():
            remote = policy.remote_topic(self.source, topic)
            have = meta.topics.get(remote)
            if have is None or have.error is not None:
                wanted.append(NewTopic(remote, num_partitions=n, replication_factor=1))
            elif len(have.partitions) < n:
                raise TopicMismatch(f"{remote} has {len(have.partitions)} partitions in {self.target}; "
                                    f"{topic} has {n} in {self.source}")
        if not wanted:
            return
        for name, future in self._target_admin.create_topics(wanted, request_timeout=15).items():
            try:
                future.result(15)
                log.info("created %s in region %s", name, self.target)
            except KafkaException as exc:
                if exc.args and getattr(exc.args[0], "code", lambda: None)() == KafkaError.TOPIC_ALREADY_EXISTS:
                    continue
                raise MirrorError(f"cannot create {name} in region {self.target}: {exc}") from exc

    def _assign(self) -> None:
        self._consumer.assign([TopicPartition(t, p, s.next_offset) for (t, p), s in sorted(self.parts.items())])

    # ------------------------------------------------------------------ the loop
    def run(self) -> Stats:
        if not self._started:
            self.start()
        while not self.stopping.is_set():
            self.step()
        return self.stats

    def step(self) -> int:
        """One round: copy what arrived (unless paused), then the idle bookkeeping. Returns records copied."""
        now = self._clock()
        if now - self._checked_pause_at >= 1.0:
            self._check_pause()
            self._checked_pause_at = now
        copied = 0
        if not self._paused:
            msgs = self._consumer.consume(self.settings.mirror_batch_max, 0.1)
            good = [m for m in msgs if m.error() is None]
            for m in msgs:
                err = m.error()
                if err is not None and err.code() != KafkaError._PARTITION_EOF:
                    self._source_error(err)
            if good:
                copied = self._copy(good)
        else:
            self.stopping.wait(0.2)
        if self._clock() - self._probed_at >= self.settings.mirror_idle_check_s:
            self._probe()
        return copied

    def _copy(self, msgs: list[Message]) -> int:
        if self._before_copy is not None:
            try:
                self._before_copy(msgs)
            except Exception as exc:  # noqa: BLE001 - what must land before the records did not: retry the batch
                log.warning("replicator %s -> %s: not copying this batch yet (%s: %s); going back to the checkpoint",
                            self.source, self.target, type(exc).__name__, exc)
                self._assign()
                self.stopping.wait(1.0)
                return 0
        errors: list[str] = []

        def delivered(err: KafkaError | None, _msg: Message) -> None:
            if err is not None:
                errors.append(str(err))

        newest: dict[TP, tuple[int, int | None]] = {}
        for m in msgs:
            topic, p, off = str(m.topic()), int(m.partition() or 0), int(m.offset() or 0)
            ts_type, ts = m.timestamp()
            kwargs: dict[str, Any] = {}
            if ts_type != TIMESTAMP_NOT_AVAILABLE:
                kwargs["timestamp"] = ts
            while True:
                try:
                    self._producer.produce(
                        policy.remote_topic(self.source, topic), value=m.value(), key=m.key(), partition=p,
                        headers=copy_headers(m.headers(), self.source, topic, p, off), on_delivery=delivered,
                        **kwargs,
                    )
                    break
                except BufferError:
                    self._producer.poll(0.05)
            prev = newest.get((topic, p))
            stamp: int | None = ts if ts_type != TIMESTAMP_NOT_AVAILABLE else (prev[1] if prev else None)
            newest[(topic, p)] = (max(off + 1, prev[0] if prev else 0), stamp)
            self.parts[(topic, p)].last_record_ms = self._clock() * 1000
        remaining = self._producer.flush(30)
        if remaining or errors:
            self.stats.flush_failures += 1
            log.warning("replicator %s -> %s: %d copies not acknowledged (%s); going back to the checkpoint",
                        self.source, self.target, remaining or len(errors), errors[:1] or "timeout")
            self._renew_producer()
            self._assign()  # from the last acknowledged positions: this batch again
            self.stopping.wait(1.0)
            return 0
        now_ms = int(self._clock() * 1000)
        for (topic, p), (next_offset, newest_ts) in newest.items():
            self.parts[(topic, p)].copied(next_offset, newest_ts)
            if newest_ts is not None:
                metrics.LATENCY.labels(**self._labels).observe(max(0.0, (now_ms - newest_ts) / 1000))
        self._save({tp: self.parts[tp] for tp in newest})
        for t, n in _count_by_topic(msgs).items():
            self.stats.by_topic[t] = self.stats.by_topic.get(t, 0) + n
            metrics.RECORDS.labels(self.source, self.target, t).inc(n)
        self.stats.batches += 1
        self.stats.records += len(msgs)
        self._publish_lag(now_ms)
        return len(msgs)

    def _save(self, parts: dict[TP, PartitionState]) -> None:
        """Checkpoint, retrying while the target's database is away (nothing is consumed meanwhile:
        the copies are acknowledged, only the bookkeeping waits)."""
        def failed(state: RetryCallState) -> None:
            exc = state.outcome.exception() if state.outcome is not None else None
            log.warning("replicator %s -> %s: checkpoint not written (%s); retrying", self.source, self.target, exc)

        def pause(seconds: float) -> None:
            self.stopping.wait(seconds)  # cut short by a stop

        # Any error: psycopg's of a database that is restarting. Once stopping, the last error
        # is dropped: the next run copies the batch again (duplicates, not a gap).
        Retrying(stop=lambda _state: self.stopping.is_set(), wait=wait_exponential(multiplier=0.2, max=5.0),
                 sleep=pause, before_sleep=failed, retry_error_callback=lambda _state: None,
                 )(self.store.save, {tp: s.checkpoint() for tp, s in parts.items()})

    def _probe(self) -> None:
        """Ask the source for each partition's end; a quiet partition at its end is complete now."""
        self._probed_at = self._clock()
        at_ms = int(self._probed_at * 1000)
        window_ms = self.settings.mirror_idle_check_s * 1000
        answered = True
        for tp, state in self.parts.items():
            try:
                _low, high = self._consumer.get_watermark_offsets(TopicPartition(*tp), timeout=2, cached=False)
            except KafkaException:
                answered = False
                break
            quiet = not self._paused and at_ms - state.last_record_ms >= window_ms
            state.probed(int(high), at_ms, quiet)
        metrics.SOURCE_UP.labels(**self._labels).set(1 if answered else 0)
        if answered:
            self._save(self.parts)
        self._publish_lag(at_ms)

    def _lag_of(self, state: PartitionState) -> Callable[[], float]:
        def lag() -> float:
            return round(state.lag_seconds(int(self._clock() * 1000)), 3)

        return lag

    def _publish_lag(self, now_ms: int) -> None:
        for (topic, p), state in self.parts.items():
            metrics.LAG_RECORDS.labels(self.source, self.target, topic, str(p)).set(state.lag)

    def _check_pause(self) -> None:
        try:
            paused, reason = self.store.paused()
        except Exception as exc:  # noqa: BLE001 - the target's database restarting: keep the last answer
            log.debug("pause flag unreadable: %s", exc)
            return
        if paused != self._paused:
            log.info("replicator %s -> %s %s%s", self.source, self.target, "paused" if paused else "running",
                     f" ({reason})" if reason else "")
            if self._paused is not None:
                parts = [TopicPartition(t, p) for t, p in self.parts]
                (self._consumer.pause if paused else self._consumer.resume)(parts)
            self._paused = paused
            metrics.PAUSED.labels(**self._labels).set(1 if paused else 0)

    def _source_error(self, err: KafkaError) -> None:
        if err.fatal():
            raise MirrorError(f"source consumer failed: {err}")
        log.debug("replicator %s -> %s: source: %s", self.source, self.target, err)

    def _renew_producer(self) -> None:
        self._producer = renewed(self._producer, self._pconfig)

    def lag(self) -> dict[TP, int]:
        return {tp: s.lag for tp, s in self.parts.items()}

    def close(self) -> None:
        try:
            self._consumer.close()
        except (KafkaException, RuntimeError):
            pass
        self._producer.flush(5)
        self.store.close()


def _count_by_topic(msgs: Sequence[Message]) -> dict[str, int]:
    out: dict[str, int] = {}
    for m in msgs:
        out[str(m.topic())] = out.get(str(m.topic()), 0) + 1
    return out


def serve(settings: Settings, source: str, target: str, before_copy: BeforeCopy | None = None) -> int:
    """Replicate until SIGTERM/SIGINT, serving /metrics."""
    from regionsync.metrics import serve_metrics

    replicator = Replicator(settings.for_region(target), source, target, before_copy=before_copy)
    serve_metrics(settings.metrics_port("mirror", target, source), settings.serve_host,
                  f"replicator {source} -> {target}")

    def _stop(signum: int, _frame: Any) -> None:
        replicator.stopping.set()

    signal.signal(signal.SIGTERM, _stop)
    signal.signal(signal.SIGINT, _stop)
    try:
        replicator.run()
    except MirrorError as exc:
        if not replicator.stopping.is_set():
            raise
        log.info("stopped: %s", exc)
    finally:
        replicator.close()
    log.info("replicator %s -> %s stopped: %s", source, target, replicator.stats)
    return 0

