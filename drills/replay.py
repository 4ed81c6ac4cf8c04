"""`regionsync replay`: re-drive a topic range into a topic or into a region.

* Into a topic (``to_topic``, on ``to_bootstrap`` or the same cluster): every record of the range
  is produced again with its key, headers and timestamp, plus origin headers (where it came
  from), to the same partition number when the target has it (order per partition kept), else by
  key. ``rate`` caps records per second; a checkpoint file makes it resumable (drills/checkpoint.py).
* Into a region: nothing is copied. The region's consumer is moved back to the range's start
  and re-applies from there; every region sink is idempotent (version guard; the dialog reducer
  skips events it has folded), so what it holds already is skipped and what it lost comes back.
  For the chunks topic that consumer is the region's indexer group; for the dialog topic it is
  the region's dialog state store, whose positions are moved, after which the log is folded to
  its end (what a new standby does, dialog/rebuild.py).
  A group's offsets can only be moved while it has no members: a running indexer (or dialog
  worker) is refused with a clear error, unless ``stop_consumer`` is set and it is a process of
  the embedded stack: then it is stopped, the offsets moved, and it is started again.

Everything that can be wrong with the input (unknown topic, region, partition; a start past the
end; a checkpoint of another job) is found before anything is touched.
"""

from __future__ import annotations

import dataclasses
import logging
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from confluent_kafka import KafkaError, Message, TopicPartition

from drills import checkpoint as ckpt
from drills import kafka_io, progress, replay_region
from drills.errors import BadInput, ReplayFailed
from drills.ranges import PartitionRange, resolve_ranges
from drills.rate import RateLimiter
from drills.reconcile import origin_headers
from mirror import policy
from regionsync.kafka import new_producer
from regionsync.settings import Settings
from regionsync.settings_parts import KafkaSettings

log = logging.getLogger(__name__)

# An acknowledged flush (and a checkpoint write) every this many records or seconds, whichever
# comes first: at a low --rate the checkpoint still moves every second.
FLUSH_EVERY = 500
FLUSH_EVERY_S = 1.0


class Interrupted(ReplayFailed):
    """Stopped on request after the checkpoint was written; run the same command to resume."""


@dataclass(frozen=True)
class ReplayRequest:
    topic: str
    partitions: tuple[int, ...] | None = None
    from_offset: int | None = None
    from_time_ms: int | None = None
    to_offset: int | None = None
    to_time_ms: int | None = None
    to_topic: str | None = None
    to_bootstrap: str | None = None
    region: str | None = None
    rate: float | None = None
    dry_run: bool = False
    checkpoint: Path | None = None
    stop_consumer: bool = False
    wait: bool = True

    def identity(self) -> dict[str, Any]:
        """What makes two runs the same job (resuming one continues the other)."""
        return {
            "topic": self.topic, "partitions": list(self.partitions or []), "from_offset": self.from_offset,
            "from_time_ms": self.from_time_ms, "to_offset": self.to_offset, "to_time_ms": self.to_time_ms,
            "to_topic": self.to_topic, "to_bootstrap": self.to_bootstrap, "region": self.region,
        }


@dataclass
class ReplayResult:
    topic: str
    target: str
    ranges: list[PartitionRange]
    dry_run: bool
    sent: int = 0  # records produced by this run (topic target)
    resumed: bool = False
    moved: dict[int, int] = field(default_factory=dict)  # region target: partition -> new position
    applied_to_end: bool | None = None  # region target: the consumer reached the range's end
    seconds: float = 0.0

    def to_dict(self) -> dict[str, Any]:
        return {
            "topic": self.topic,
            "target": self.target,
            "dry_run": self.dry_run,
            "partitions": {str(r.partition): {"start": r.start, "end": r.end, "count": r.count} for r in self.ranges},
            "total": sum(r.count for r in self.ranges),
            "sent": self.sent,
            "resumed": self.resumed,
            "moved": {str(p): o for p, o in self.moved.items()},
            "applied_to_end": self.applied_to_end,
            "seconds": round(self.seconds, 3),
        }


def in_region(settings: Settings, req: ReplayRequest) -> tuple[Settings, ReplayRequest]:
    """A region target works on the region's own broker, on the topic as that region names it:
    the source's chunks topic is the region's copy of it (``east.regionsync.doc-chunks`` in
    north); a dialog topic is one the region folds (its own, or its copy of another region's).
    Raises :class:`BadInput` for a topic the region does not consume."""
    if req.region is None:
        return settings, req
    if req.region not in settings.regions:
        raise BadInput(f"unknown region {req.region!r}; configured regions: {', '.join(settings.regions)}")
    local = settings.for_region(req.region)
    chunks = policy.chunks_topic_in(settings, req.region)
    dialog = policy.inbound_topics(settings, req.region, settings.dialog_topic)
    topic = chunks if req.topic == settings.chunks_topic else req.topic
    if topic != chunks and topic not in dialog:
        raise BadInput(
            f"region {req.region} consumes {chunks} (its indexer) and {', '.join(dialog)} (its dialog store), not "
            f"{req.topic}; replay {req.topic} into a topic instead"
        )
    return local, dataclasses.replace(req, topic=topic)


def plan(settings: Settings, req: ReplayRequest) -> list[PartitionRange]:
    """Check the request and resolve its ranges. Raises :class:`BadInput`; touches nothing."""
    if (req.to_topic is None) == (req.region is None):
        raise BadInput("replay needs exactly one target: --to-topic TOPIC or --region REGION")
    settings, req = in_region(settings, req)
    if req.region is not None:
        if req.rate is not None:
            raise BadInput("--rate applies to a replay into a topic; a region's consumer reads at its own pace")
    marks = kafka_io.watermarks(settings.kafka(), req.topic, probe=True)
    if req.to_topic is not None:
        target = _target_kafka(settings, req)
        if req.to_topic == req.topic and target.bootstrap == settings.kafka_bootstrap:
            raise BadInput("the target topic is the source topic on the same cluster")
        kafka_io.watermarks(target, req.to_topic)  # raises BadInput if unknown
    wanted = list(req.partitions) if req.partitions else sorted(marks)
    known = [p for p in wanted if p in marks]
    starts: dict[int, int | None] = {p: req.from_offset for p in known}
    ends: dict[int, int | None] = {p: req.to_offset for p in known}
    if req.from_time_ms is not None:
        starts = {p: _offset_for_time(settings, req.topic, p, marks[p], req.from_time_ms) for p in known}
    if req.to_time_ms is not None:
        ends = {p: _offset_for_time(settings, req.topic, p, marks[p], req.to_time_ms) for p in known}
    return resolve_ranges(req.topic, marks, wanted, starts, ends)


def _target_kafka(settings: Settings, req: ReplayRequest) -> KafkaSettings:
    """The broker a replay into a topic writes to: ``--to-bootstrap``'s, or the source topic's."""
    kafka = settings.kafka()
    return dataclasses.replace(kafka, bootstrap=req.to_bootstrap) if req.to_bootstrap else kafka


def _offset_for_time(settings: Settings, topic: str, partition: int, marks: tuple[int, int], ts_ms: int) -> int:
    """The first offset at or after ``ts_ms`` (the end if none). The broker's answer is checked
    against the record it names, and the partition scanned from there if it is wrong: tansu
    answers a time lookup with the low watermark whatever the time."""
    low, end = marks
    found = kafka_io.offsets_for_time(settings.kafka(), topic, [partition], ts_ms).get(partition)
    if found is None:
        return end
    ts = kafka_io.timestamp_at(settings.kafka(), topic, partition, found) if found < end else None
    if ts is not None and ts >= ts_ms:
        return found
    return kafka_io.first_offset_at_or_after(settings.kafka(), topic, partition, max(found, low), end, ts_ms)


def run(settings: Settings, req: ReplayRequest, stop: threading.Event | None = None) -> ReplayResult:
    started = time.monotonic()
    ranges = plan(settings, req)
    if (req.to_topic is None) != (req.region is None):
        settings, req = in_region(settings, req)
    target = f"topic {req.to_topic}" + (f" at {req.to_bootstrap}" if req.to_bootstrap else "") if req.to_topic else f"region {req.region}"
    result = ReplayResult(req.topic, target, ranges, req.dry_run)
    if req.dry_run:
        pass
    elif req.to_topic is not None:
        _into_topic(settings, req, ranges, result, stop or threading.Event())
    elif req.region is not None and req.topic == policy.chunks_topic_in(settings, req.region):
        replay_region.into_indexer(settings, req, ranges, result)
    else:
        replay_region.into_dialog_store(settings, req, ranges, result)
    result.seconds = time.monotonic() - started
    return result


# ---------------------------------------------------------------------------- into a topic


def checkpoint_path(settings: Settings, req: ReplayRequest) -> Path:
    return req.checkpoint or settings.state_dir / "replay" / f"{ckpt.job_key(req.identity())}.json"


def _into_topic(
    settings: Settings, req: ReplayRequest, ranges: list[PartitionRange], result: ReplayResult, stop: threading.Event
) -> None:
    assert req.to_topic is not None
    path = checkpoint_path(settings, req)
    job = ckpt.job_key(req.identity())
    cp = ckpt.load(path, job)
    if cp is not None:
        result.resumed = True
        result.ranges = cp.ranges  # the ranges planned by the interrupted run, not a moved end
        log.info("resuming replay from checkpoint %s: %d of %d records sent", path, cp.sent, sum(r.count for r in cp.ranges))
    else:
        cp = ckpt.Checkpoint.start(job, ranges)
        ckpt.save(path, cp)
    target = _target_kafka(settings, req)
    target_parts = len(kafka_io.watermarks(target, req.to_topic))
    producer = new_producer(target.producer({"linger.ms": 5}))
    failures: list[str] = []

    def delivered(err: KafkaError | None, msg: Message) -> None:
        if err is not None:
            failures.append(f"{msg.topic()}[{msg.partition()}]: {err}")

    pending: dict[int, int] = {}  # partition -> next offset once the pending sends are acknowledged

    def flush() -> None:
        remaining = producer.flush(30.0)
        if remaining or failures:
            raise ReplayFailed(f"{remaining} records unacknowledged, {len(failures)} failed: {'; '.join(failures[:3])}; "
                               f"the checkpoint {path} holds the last acknowledged position")
        for p, o in pending.items():
            cp.advance(p, o)
        pending.clear()
        ckpt.save(path, cp)

    limiter = RateLimiter(req.rate)
    todo = cp.remaining()
    consumer = kafka_io.reader(settings.kafka())
    since_flush, last_flush = 0, time.monotonic()
    try:
        with progress.bar(sum(r.count for r in cp.ranges), f"replay {req.topic} -> {req.to_topic}", initial=cp.sent) as pbar:
            for rng in todo:
                for msg in _read_range(consumer, req.topic, rng, stop):
                    limiter.acquire()
                    headers = list(msg.headers() or []) + origin_headers(msg.topic(), msg.partition(), msg.offset(), "replay")
                    ts_type, ts = msg.timestamp()
                    kwargs: dict[str, Any] = {"timestamp": ts} if ts > 0 else {}
                    if rng.partition < target_parts:
                        kwargs["partition"] = rng.partition
                    producer.produce(req.to_topic, key=msg.key(), value=msg.value(), headers=headers,
                                     on_delivery=delivered, **kwargs)
                    producer.poll(0)
                    pending[rng.partition] = msg.offset() + 1
                    result.sent += 1
                    since_flush += 1
                    pbar.update(1)
                    if since_flush >= FLUSH_EVERY or time.monotonic() - last_flush >= FLUSH_EVERY_S:
                        flush()
                        since_flush, last_flush = 0, time.monotonic()
                if stop.is_set():
                    break
                # a range is done when its end is reached, even where compaction left gaps
                pending[rng.partition] = max(pending.get(rng.partition, rng.start), rng.end)
            flush()
    finally:
        consumer.close()
    if stop.is_set():
        raise Interrupted(f"replay interrupted after {cp.sent} of {sum(r.count for r in cp.ranges)} records; "
                          f"run the same command to resume (checkpoint {path})")
    cp.done = True
    ckpt.save(path, cp)


def _read_range(consumer: Any, topic: str, rng: PartitionRange, stop: threading.Event, idle_polls: int = 25) -> Any:
    """Records of ``rng`` in offset order. Ends at the range's end, or after ``idle_polls`` empty
    polls (a compacted topic can lack the last offsets), or when ``stop`` is set."""
    consumer.assign([TopicPartition(topic, rng.partition, rng.start)])
    empty = 0
    while not stop.is_set():
        msgs = consumer.consume(500, 0.2)
        if not msgs:
            empty += 1
            if empty >= idle_polls:
                log.warning("%s[%d]: nothing after offset before %d; treating the range as read", topic, rng.partition, rng.end)
                return
            continue
        empty = 0
        for msg in msgs:
            if msg.error() is not None:
                continue
            if msg.offset() >= rng.end:
                return
            yield msg
            if msg.offset() + 1 >= rng.end or stop.is_set():
                return
