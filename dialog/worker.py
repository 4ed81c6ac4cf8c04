"""The dialog worker: folds a region's session-event logs into its state store.

    python -m dialog.worker --region north

What a region folds (:func:`mirror.policy.inbound_topics`): its own dialog topic (the turns its
service wrote) and the copy of every other region's (brought by the replicators), plus the
control topics, where promotions travel. Each session's events come from whichever region was
active when they were written; their sequence numbers carry on across a failover.

Why a plain confluent-kafka consumer and not a Faust agent: the positions must live in the
state store's transaction (Faust commits them to the broker), Faust's exactly-once mode fails on
tansu, and a Faust agent does about 4k events/s on one core where this loop folds tens of
thousands (``python -m bench.dialog_rebuild`` prints the figure; shared/STACK.md has Faust's).

Loop: consume a batch -> control records first (a promotion learned from another region is
recorded, and may fence events of this very batch) -> decode each dialog record (malformed ->
dead-letter topic, acknowledged before the commit) -> events a promotion's cut fences are set
aside in the conflict report (:mod:`dialog.fence`), the others folded into their session with the
pure reducer -> one store transaction with the changed states, the new positions, the source
positions, the fenced events, the promotions and the counters. Partitions are assigned by hand
(one worker per region; the store's compare-and-set on positions stops a second one) and start
at the stored positions, so a crash at any point loses nothing and applies nothing twice. Every
N events or T seconds the worker writes a snapshot to the region's object store.

A promotion learned after this store folded events it fences (this region was the active one
and comes back; a standby that heard of the promotion late) means the sessions hold turns no
other region has: the worker folds its logs again from their start (:meth:`DialogWorker.refold`).

"The end of the log" (:meth:`DialogWorker.catch_up`): tansu reports a high-water mark that can
be lower than the real end (the base offset of the last batch + 1, and after a broker restart
1 until the next write), so reaching it does not mean the partition is drained. The worker
counts as caught up only when every partition is at or past the reported end AND
``dialog_idle_polls`` polls in a row returned nothing.
"""

from __future__ import annotations

import argparse
import logging
import signal
import sys
import threading
import time
from collections import Counter, deque
from collections.abc import Callable, Mapping, Sequence
from typing import Any, Protocol

import orjson
import psycopg
from confluent_kafka import OFFSET_BEGINNING, Consumer, KafkaError, KafkaException, Message, TopicPartition

from dialog import fence, metrics, reducer
from dialog.errors import DialogError, MalformedEvent, PromotionsChanged, SnapshotError
from dialog.events import DialogEvent, decode
from dialog.fence import Promotion
from dialog.kafka_io import DeadLetters, consumer_config, dead_letter, where
from dialog.logcheck import KafkaLogReader, LogReader, Verdict, judge
from dialog.rebuild import RebuildReport, restore
from dialog.reducer import Outcome
from dialog.snapshots import Manifest, SnapshotStore
from dialog.state import SessionState
from dialog.store import TP, FencedEvent, Origin, PostgresStore, StateStore, Stats
from mirror import policy
from mirror.replicator import provenance
from regionsync.kafka import EndsUnknown, fetch_ends, new_consumer
from regionsync.settings import Settings

log = logging.getLogger(__name__)

CHECK_EVERY_S = 5.0  # how often an idle worker checks its positions, topics and the store's promotions
FENCED = "fenced"  # outcome label of events a promotion's cut set aside


class DeadLetterSink(Protocol):
    def send(self, records: Sequence[tuple[bytes | None, bytes]]) -> None: ...


class Fold:
    """The pure part of a batch: what a list of records does to the sessions, given the
    promotions known. No I/O; :class:`DialogWorker` commits the result."""

    def __init__(self, region: str, regions: list[str], promotions: list[Promotion],
                 states: dict[str, SessionState], positions: dict[TP, int], in_log_order: bool = True) -> None:
        self.region = region
        # False: records come in another order than the log's (a reference fold sorted by session
        # and sequence), so an offset below the position is not a re-fetched record.
        self._in_log_order = in_log_order
        self.regions = regions
        self.promotions = list(promotions)
        self.new_promotions: list[Promotion] = []
        self._states = states
        self.positions = dict(positions)
        self.touched: dict[str, SessionState] = {}
        self.sources: dict[Origin, int] = {}
        self.folded: dict[Origin, int] = {}
        self.fenced: list[FencedEvent] = []
        self.dead: list[tuple[bytes | None, bytes]] = []
        self.outcomes: Counter[str] = Counter()

    def control(self, msg: Message) -> None:
        """A control record: a promotion not known yet is recorded (and fences from now on)."""
        p, offset = where(msg)
        self.positions[(str(msg.topic()), p)] = offset + 1
        try:
            promo = Promotion.from_json(msg.value() or b"")
        except ValueError as exc:
            log.warning("dead letter %s[%d]@%d: %s", msg.topic(), p, offset, exc)
            self.dead.append((msg.key(), dead_letter("bad_control_record", str(exc), msg, stage="control")))
            return
        if all(promo.ballot != known.ballot for known in self.promotions):
            self.promotions.append(promo)
            self.new_promotions.append(promo)

    def event(self, msg: Message, pre: Decoded | None = None) -> None:
        p, offset = where(msg)
        topic = str(msg.topic())
        if self._in_log_order and offset < self.positions.get((topic, p), 0):
            return  # already in the store (re-fetched after a seek)
        self.positions[(topic, p)] = max(self.positions.get((topic, p), 0), offset + 1)
        origin = policy.origin_of(topic, self.region, self.regions)
        prov = provenance(msg.headers()) if origin != self.region else None
        source_offset = prov.offset if prov is not None else offset
        key = (origin, p)
        self.sources[key] = max(self.sources.get(key, 0), source_offset + 1)
        event = pre if pre is not None else decoded(msg)
        if isinstance(event, MalformedEvent):
            log.warning("dead letter %s[%d]@%d: %s", topic, p, offset, event)
            self.dead.append((msg.key(), dead_letter(event.reason, event.detail, msg)))
            return
        by = fence.fenced_by(self.promotions, origin, p, source_offset, fence.event_ballot(event.epoch, event.origin))
        if by is not None:
            self.fenced.append(_fenced(event, origin, p, source_offset, by, msg.value() or b""))
            self.outcomes[FENCED] += 1
            return
        self.folded[key] = max(self.folded.get(key, 0), source_offset + 1)
        self.apply(event)

    def apply(self, event: DialogEvent) -> None:
        sid = event.session_id
        before = self.touched.get(sid) or self._states.get(sid)
        result = reducer.step(before, event)
        self.outcomes[result.outcome.value] += 1
        if result.outcome is Outcome.GAP:
            log.warning("session %s: events %d..%d missing before seq %d", sid, *result.missing or (0, 0), event.seq)
        elif result.outcome is Outcome.CONFLICT:
            log.error("session %s: seq %d written twice with different events (two writers?)", sid, event.seq)
        if result.state is not before:
            self.touched[sid] = result.state

    def stats(self) -> Stats:
        o = self.outcomes
        return Stats(
            applied=o[Outcome.APPLIED.value] + o[Outcome.GAP.value], duplicates=o[Outcome.DUPLICATE.value],
            conflicts=o[Outcome.CONFLICT.value], late=o[Outcome.LATE.value], gaps=o[Outcome.GAP.value],
            dead_letters=len(self.dead), fenced=o[FENCED],
        )


Decoded = DialogEvent | MalformedEvent


def decoded(msg: Message) -> Decoded:
    try:
        return decode(msg.key(), msg.value())
    except MalformedEvent as exc:
        return exc


class Merger:
    """Orders the records of a region's dialog logs so every session folds in sequence.

    A session's events can sit in several logs: it started in one region and went on in another
    after a promotion. Within one log they are in order; across logs the epoch says which came
    first (a promoted region writes at a higher epoch, and only after folding what it had
    received). A session lives in the same partition number of every region's dialog topic (the
    same key, partitioner and partition count everywhere; the replicators keep partitions), so the
    merge is per partition number: the next record folded is the lowest-epoch head among that
    partition's logs, and only while every one of them either has a record waiting or is at its
    end; otherwise the merge waits for the fetch. Records not folded yet keep their log's position
    where it was: nothing is lost by a crash. In steady state one log has news and the others are
    at their end, so a record is folded as soon as it arrives."""

    def __init__(self) -> None:
        self.buffers: dict[TP, deque[tuple[Message, Decoded]]] = {}
        self.fetched_to: dict[TP, int] = {}  # one past the newest record buffered, per log

    def add(self, msg: Message) -> None:
        tp = (str(msg.topic()), int(msg.partition() or 0))
        offset = int(msg.offset() or 0)
        if offset < self.fetched_to.get(tp, 0):
            return  # fetched again after a seek: it is buffered or folded already
        self.fetched_to[tp] = offset + 1
        self.buffers.setdefault(tp, deque()).append((msg, decoded(msg)))

    def take(self, streams: Sequence[TP], at_end: Callable[[TP], bool]) -> list[tuple[Message, Decoded]]:
        """The records that may be folded now, in folding order."""
        by_partition: dict[int, list[TP]] = {}
        for tp in streams:
            by_partition.setdefault(tp[1], []).append(tp)
        out: list[tuple[Message, Decoded]] = []
        for tps in by_partition.values():
            while True:
                heads = [(_epoch(self.buffers[tp][0][1]), tp) for tp in tps if self.buffers.get(tp)]
                if not heads:
                    break
                if any(not self.buffers.get(tp) and not at_end(tp) for tp in tps):
                    break  # a log of this partition may still hold an earlier epoch
                _e, tp = min(heads)
                out.append(self.buffers[tp].popleft())
        return out

    def pending(self) -> int:
        return sum(len(b) for b in self.buffers.values())

    def reset(self, positions: Mapping[TP, int]) -> None:
        """Forget what is buffered; the logs are read again from ``positions``."""
        self.buffers.clear()
        self.fetched_to = dict(positions)


def _epoch(item: Decoded) -> int:
    return -1 if isinstance(item, MalformedEvent) else item.epoch  # a dead letter goes first: it folds nothing


def _fenced(event: DialogEvent, origin: str, partition: int, source_offset: int, by: Promotion,
            raw: bytes) -> FencedEvent:
    return FencedEvent(origin, partition, source_offset, event.session_id, event.seq, event.event_id, event.epoch,
                       by.epoch, by.region, raw)


class DialogWorker:
    def __init__(
        self,
        settings: Settings,
        region: str,
        store: StateStore,
        consumer: Consumer,
        dead_letters: DeadLetterSink,
        snapshots: SnapshotStore | None,
        clock: Callable[[], float] = time.monotonic,
        log_reader: LogReader | None = None,
        consumer_factory: Callable[[], Consumer] | None = None,
    ) -> None:
        self.settings = settings
        self.region = region
        self.store = store
        self.snapshots = snapshots
        self.topic = settings.dialog_topic  # this region's own dialog topic
        self.dialog_topics = policy.inbound_topics(settings, region, settings.dialog_topic)
        self.control_topics = policy.inbound_topics(settings, region, settings.control_topic)
        self._consumer = consumer
        self._new_consumer = consumer_factory
        self._dead = dead_letters
        self._clock = clock
        self._positions: dict[TP, int] = {}
        self._partitions: list[TP] = []
        self._states: dict[str, SessionState] = {}
        self._promotions: list[Promotion] = []
        self._stats = Stats()  # totals as stored (they travel with snapshots)
        self._since_snapshot = 0
        self._last_snapshot = clock()
        self.stopping = threading.Event()  # set (e.g. by a signal handler) to stop after the current batch
        self._reader = log_reader  # checks the stored positions against the log (dialog/logcheck.py)
        self._checked_at = float("-inf")
        self._merger = Merger()
        self._paused: set[TP] = set()
        self.refolds = 0

    @classmethod
    def create(cls, settings: Settings, region: str, *, snapshots: bool = True) -> DialogWorker:
        settings = settings.for_region(region)
        store = PostgresStore.for_region(settings, region)

        def positioned_consumer() -> Consumer:
            # "error", not "earliest": a stored position the log no longer has must be noticed (see
            # _log_moved), not silently read from the start, where every offset below the position
            # would be skipped as "already in the store".
            return new_consumer({**consumer_config(settings, f"regionsync-dialog-{region}"), "auto.offset.reset": "error"})

        snap = SnapshotStore.from_settings(settings) if snapshots else None
        reader = KafkaLogReader(settings, region)
        return cls(settings, region, store, positioned_consumer(), DeadLetters(settings), snap, log_reader=reader,
                   consumer_factory=positioned_consumer)

    # ------------------------------------------------------------------ lifecycle
    def start(self) -> None:
        """Load the stored states, positions and promotions and assign every partition at its
        position. Call after the store holds what it should (:meth:`rebuild` does both)."""
        self._positions = self.store.offsets()
        self._states = {s.session_id: s for s in self.store.all_states()}
        self._stats = self.store.stats()
        self._promotions = self.store.promotions()
        self._partitions = self._discover()
        self._assign()
        self._merger.reset(self._positions)
        log.info("dialog worker %s: %d sessions, %d promotions known, positions %s", self.region, len(self._states),
                 len(self._promotions), {f"{t}[{p}]": o for (t, p), o in sorted(self._positions.items())} or "start")
        self._refold_if_tainted(self._promotions)
        self.check_positions()

    def _discover(self) -> list[TP]:
        """Every partition of every topic this region folds that exists now (a copy of another
        region's topic appears when its replicator first runs: looked for again while idle)."""
        try:
            meta = self._consumer.list_topics(timeout=10)
        except KafkaException as exc:
            raise DialogError(f"region {self.region}'s broker does not answer: {exc}") from exc
        found = []
        for topic in [*self.dialog_topics, *self.control_topics]:
            tmeta = meta.topics.get(topic)
            if tmeta is not None and tmeta.error is None:
                found += [(topic, p) for p in sorted(tmeta.partitions)]
        if not any(t == self.topic for t, _ in found):
            raise DialogError(f"topic {self.topic} has no partitions in region {self.region} (does it exist?)")
        return found

    def _assign(self) -> None:
        self._consumer.assign(
            [TopicPartition(t, p, self._positions.get((t, p), OFFSET_BEGINNING)) for t, p in self._partitions]
        )
        self._paused.clear()

    def rebuild(self) -> RebuildReport:
        """Restore the store if it is empty (:func:`dialog.rebuild.restore`: the newest usable
        snapshot, or nothing), start, and fold the log to its end; report how."""
        t0 = time.monotonic()
        restored = restore(self.store, self.snapshots, self.region)
        t_restored = time.monotonic()
        self.start()
        replayed = self.catch_up()
        report = RebuildReport(
            region=self.region,
            source=restored.source,
            snapshot_id=restored.snapshot_id,
            skipped_snapshots=restored.skipped,
            sessions_restored=self.store.count(),
            sessions_from_snapshot=restored.sessions,
            events_replayed=replayed,
            seconds=round(time.monotonic() - t0, 3),
            restore_seconds=round(t_restored - t0, 3),
            positions={f"{t}[{p}]": o for (t, p), o in sorted(self.positions.items())},
        )
        log.info("region %s rebuilt from %s: %d sessions, %d events replayed in %.2fs",
                 self.region, restored.source, report.sessions_restored, replayed, report.seconds)
        return report

    def close(self) -> None:
        self._consumer.close()
        if self._reader is not None:
            self._reader.close()
        self.store.close()

    @property
    def positions(self) -> dict[TP, int]:
        return dict(self._positions)

    # ------------------------------------------------------------------ consuming
    def poll_once(self, max_events: int | None = None) -> int:
        """Consume, fold what the merge allows and commit it; returns the records consumed (0:
        nothing came)."""
        msgs = self._consumer.consume(max_events or self.settings.dialog_batch_max_events,
                                      self.settings.dialog_poll_timeout_s)
        if msgs or self._merger.pending():
            self._process(msgs)
        self._maybe_snapshot()
        return len(msgs)

    def catch_up(self) -> int:
        """Consume to the end of the logs (see the module docstring); returns records consumed."""
        consumed = idle = 0
        while idle < self.settings.dialog_idle_polls and not self.stopping.is_set():
            got = self.poll_once(self.settings.dialog_catchup_batch_events)
            if got or self._merger.pending():
                consumed += got
                idle = 0
            elif self._at_reported_end():
                idle += 1
            else:
                idle = 0
        return consumed

    def _at_end(self, tp: TP) -> bool:
        """Everything of ``tp`` the broker has was fetched (the fetch's high watermark: exact on
        tansu too, where ListOffsets is not, see regionsync/kafka.py)."""
        _low, high = self._consumer.get_watermark_offsets(TopicPartition(*tp), cached=True)
        if high < 0:
            return False  # no fetch answer yet
        return max(self._positions.get(tp, 0), self._merger.fetched_to.get(tp, 0)) >= high

    def run(self) -> None:
        """Follow the log until :attr:`stopping` is set; check the positions while idle.

        The state store failing (its database restarting) does not end the worker: the batch was
        not committed, so it waits, reloads states and positions from the store (a commit whose
        answer was lost may have landed) and reads on from there."""
        while not self.stopping.is_set():
            try:
                if not self.poll_once() and self._clock() - self._checked_at >= CHECK_EVERY_S:
                    self.check_positions()
            except psycopg.OperationalError as exc:
                log.warning("dialog worker %s: state store unavailable (%s); reloading from it when it is back",
                            self.region, exc)
                self._reload()
            except (DialogError, EndsUnknown) as exc:
                # A fold again from the logs' start that could not reach their ends in time (a
                # broker just restarted, slow to answer): nothing was committed, so start over
                # from the store rather than die (seen in CI: a rejoining region's worker gone,
                # its service answering 503 "is its dialog worker running?").
                log.warning("dialog worker %s: %s; starting again from the store", self.region, exc)
                self._reload()

    def _reload(self, pause_s: float = 1.0) -> None:
        while not self.stopping.wait(pause_s):
            try:
                self.start()
                return
            except (psycopg.OperationalError, DialogError, EndsUnknown) as exc:
                log.warning("dialog worker %s: not started again yet (%s)", self.region, exc)
                continue

    def check_positions(self) -> list[TP]:
        """Every few seconds while idle: pick up new topics and promotions the service recorded,
        and move every dialog partition whose stored position is not on the folded log to the
        log's start (dialog/logcheck.py); returns those partitions."""
        self._checked_at = self._clock()
        try:
            found = self._discover()
        except DialogError as exc:
            log.debug("%s", exc)
            found = self._partitions
        if set(found) != set(self._partitions):
            self._partitions = found
            self._assign()
        self._learn_promotions()
        if self._reader is None:
            return []
        moved = []
        fenced_ids = None
        for tp in self._partitions:
            topic, p = tp
            if topic not in self.dialog_topics:
                continue  # promotions are idempotent: reading a control topic again is harmless
            stored = self._positions.get(tp, 0)
            marks = self._reader.watermarks(topic, p) if stored > 0 else None
            if marks is None:
                continue  # nothing folded yet, or the broker does not answer: later
            low, high = marks
            record = self._reader.record_at(topic, p, stored - 1) if stored - 1 >= low else None
            if fenced_ids is None:
                fenced_ids = {e.event_id for e in self.store.fenced()}
            verdict = judge(stored, low, record, self._states, fenced_ids)
            if verdict is Verdict.SAME_LOG:
                continue
            self._report_moved(tp, stored, low, high, verdict)
            self.store.commit([], {tp: low}, {tp: stored}, Stats())
            self._positions[tp] = low
            self._merger.buffers.pop(tp, None)
            self._merger.fetched_to[tp] = low
            self._seek(tp, low, self._positions)
            moved.append(tp)
        return moved

    def _learn_promotions(self) -> None:
        """Promotions recorded in the store by someone else (this region's service: its own
        promotion, or what it read from the other regions when it rejoined)."""
        held = self.store.promotions()
        known = {p.ballot for p in self._promotions}
        new = [p for p in held if p.ballot not in known]
        if new:
            self._promotions = held
            log.info("dialog worker %s: promotions recorded in the store: %s", self.region,
                     [(p.epoch, p.region) for p in new])
            self._refold_if_tainted(new)

    def _at_reported_end(self) -> bool:
        for topic, p in self._partitions:
            low, high = self._consumer.get_watermark_offsets(TopicPartition(topic, p), timeout=5, cached=False)
            if self._positions.get((topic, p), low) < high:
                return False
        return True

    def _process(self, msgs: list[Message]) -> None:
        fold = Fold(self.region, self.settings.regions, self._promotions, self._states, self._positions)
        for msg in msgs:
            err = msg.error()
            if err is not None:
                if err.fatal():
                    raise DialogError(f"consumer failed: {err}")
                if err.code() == KafkaError._AUTO_OFFSET_RESET and msg.partition() is not None:
                    tp = (str(msg.topic()), int(msg.partition() or 0))
                    fold.positions[tp] = self._log_moved(tp, fold.positions)
                    self._merger.buffers.pop(tp, None)
                    self._merger.fetched_to[tp] = fold.positions[tp]
                elif err.code() != KafkaError._PARTITION_EOF:
                    log.warning("consumer error (retrying): %s", err)
                continue
            if str(msg.topic()) in self.control_topics:
                fold.control(msg)  # first: a promotion read now fences records folded below
            else:
                self._merger.add(msg)
        streams = [tp for tp in self._partitions if tp[0] in self.dialog_topics]
        for msg, event in self._merger.take(streams, self._at_end):
            fold.event(msg, event)
        self._flow_control(streams)
        if fold.dead:
            self._dead.send(fold.dead)  # before the commit: a dead letter is never lost
        batch = fold.stats()
        moved = {tp: o for tp, o in fold.positions.items() if o != self._positions.get(tp)}
        if not moved and not fold.new_promotions:
            return
        expected = {tp: self._positions[tp] for tp in moved if tp in self._positions}
        folded_before = self.store.folded() if fold.new_promotions else {}
        try:
            self.store.commit(
                fold.touched.values(), moved, expected, batch, sources=fold.sources, folded=fold.folded,
                fenced=fold.fenced, promotions=fold.new_promotions,
                known_promotions=[(p.epoch, p.region) for p in self._promotions],
            )
        except PromotionsChanged as exc:
            # A promotion was recorded while this batch was folded (this region's service was
            # promoted): fold again from the committed positions, knowing it.
            log.info("dialog worker %s: %s; folding the batch again", self.region, exc)
            self._promotions = self.store.promotions()
            self._rewind()
            return
        self._positions = fold.positions
        self._states.update(fold.touched)
        self._stats = self._stats + batch
        self._since_snapshot += len(fold.touched) + batch.fenced + batch.dead_letters
        self._promotions = fold.promotions
        for outcome, n in fold.outcomes.items():
            metrics.EVENTS.labels(self.region, outcome).inc(n)
        metrics.DEAD_LETTERS.labels(f"dialog:{self.region}").inc(len(fold.dead))
        if fold.fenced:
            log.warning("dialog worker %s: %d events set aside (fenced by a promotion): %s", self.region,
                        len(fold.fenced), [(e.session_id, e.seq, e.origin) for e in fold.fenced[:5]])
        if fold.new_promotions:
            log.info("dialog worker %s: learned promotions %s", self.region,
                     [(p.epoch, p.region) for p in fold.new_promotions])
            self._refold_if_tainted(fold.new_promotions, folded_before)

    def _rewind(self) -> None:
        """Read every log again from the committed positions (what was buffered is dropped)."""
        self._merger.reset(self._positions)
        self._assign()

    def _flow_control(self, streams: Sequence[TP], high: int = 50_000) -> None:
        """A log whose records wait for another log's (an earlier epoch still being fetched) stops
        being fetched while its buffer is big; it resumes once the buffer drained."""
        pause = [tp for tp in streams if len(self._merger.buffers.get(tp, ())) > high and tp not in self._paused]
        resume = [tp for tp in self._paused if len(self._merger.buffers.get(tp, ())) < high // 2]
        if pause:
            self._consumer.pause([TopicPartition(*tp) for tp in pause])
            self._paused.update(pause)
        if resume:
            self._consumer.resume([TopicPartition(*tp) for tp in resume])
            self._paused.difference_update(resume)

    # ------------------------------------------------------------------ promotions that fence folded events
    def _refold_if_tainted(self, promotions: Sequence[Promotion], folded: dict[Origin, int] | None = None) -> None:
        folded = self.store.folded() if folded is None else folded
        for promo in promotions:
            hit = fence.tainted(promo, folded)
            if hit:
                log.warning("dialog worker %s: promotion of %s (epoch %d) fences events this store already folded "
                            "(%s): folding the logs again from their start", self.region, promo.region, promo.epoch,
                            hit)
                self.refold()
                return

    def refold(self, timeout_s: float = 600.0) -> None:
        """Fold every log of this region again from its start with the promotions known, and
        replace the store's states, positions and counters with the result in one transaction
        (readers see the old sessions until then, never a half-folded store)."""
        self.refolds += 1
        t0 = time.monotonic()
        ends = fetch_ends(self.settings.kafka_bootstrap, self._partitions, 30.0)
        consumer = self._new_consumer() if self._new_consumer is not None else self._consumer
        try:
            consumer.assign([TopicPartition(t, p, OFFSET_BEGINNING) for t, p in self._partitions])
            states: dict[str, SessionState] = {}
            fold = Fold(self.region, self.settings.regions, self.store.promotions(), states, {})
            merger = Merger()
            streams = [tp for tp in self._partitions if tp[0] in self.dialog_topics]
            deadline = time.monotonic() + timeout_s

            def at_end(tp: TP) -> bool:
                return merger.fetched_to.get(tp, 0) >= ends.get(tp, 0)

            while any(fold.positions.get(tp, 0) < end for tp, end in ends.items()):
                if self.stopping.is_set():
                    return
                if time.monotonic() > deadline:
                    raise DialogError(f"folding region {self.region}'s logs again: not at their ends after "
                                      f"{timeout_s:.0f}s")
                for msg in consumer.consume(self.settings.dialog_catchup_batch_events,
                                            self.settings.dialog_poll_timeout_s):
                    if msg.error() is not None:
                        continue
                    tp = (str(msg.topic()), int(msg.partition() or 0))
                    if int(msg.offset() or 0) >= ends.get(tp, 0):
                        continue  # past the end taken at the start: the worker folds it afterwards
                    if tp[0] in self.control_topics:
                        fold.control(msg)
                    else:
                        merger.add(msg)
                for msg, event in merger.take(streams, at_end):
                    fold.event(msg, event)
            states.update(fold.touched)
            self.store.replace_all(states.values(), fold.positions, fold.stats(), fold.sources, fold.folded)
            if fold.fenced or fold.new_promotions:
                self.store.commit([], {}, {}, Stats(), fenced=fold.fenced, promotions=fold.new_promotions)
        finally:
            if consumer is not self._consumer:
                consumer.close()
        log.warning("dialog worker %s: folded again in %.2fs: %d sessions, %d events set aside", self.region,
                    time.monotonic() - t0, len(states), len(fold.fenced))
        self.start_after_refold()

    def start_after_refold(self) -> None:
        self._positions = self.store.offsets()
        self._states = {s.session_id: s for s in self.store.all_states()}
        self._stats = self.store.stats()
        self._promotions = self.store.promotions()
        self._rewind()

    # ------------------------------------------------------------------ a log that moved
    def _log_moved(self, tp: TP, positions: dict[TP, int]) -> int:
        """The consumer says the stored position of ``tp`` is not on the log any more (a broker
        that checks: Kafka's "offset out of range"); the new position, from the log's start."""
        stored = positions.get(tp, 0)
        low, high = self._consumer.get_watermark_offsets(TopicPartition(*tp), timeout=10, cached=False)
        self._report_moved(tp, stored, low, high, Verdict.RECREATED if stored >= high else Verdict.EXPIRED)
        self._seek(tp, low, positions)
        return int(low)

    def _report_moved(self, tp: TP, stored: int, low: int, high: int, verdict: Verdict) -> None:
        """Past the log's end, or another event there: the log was recreated (a broker that lost its
        data) and starts again at low offsets; its new events continue the sessions (their sequence
        numbers go on) and must all be folded; the sessions folded so far stay. Below the log's
        start: retention removed events this store never folded; they are lost to it, and it says so."""
        topic, partition = tp
        if verdict is Verdict.RECREATED:
            log.error(
                "dialog log %s[%d] (offsets %d..%d) is not the log this store folded to %d: the log lost its "
                "history (recreated by a broker that lost its data); folding the new log from offset %d, "
                "sessions kept", topic, partition, low, high, stored, low,
            )
        else:
            log.error(
                "dialog log %s[%d] starts at %d but this store had folded it only to %d: %d events were removed "
                "before they were folded (retention) and are missing from this region's sessions",
                topic, partition, low, stored, low - stored,
            )
        metrics.LOG_RESETS.labels(self.region, verdict.value).inc()

    def _seek(self, tp: TP, offset: int, positions: dict[TP, int]) -> None:
        try:
            self._consumer.seek(TopicPartition(tp[0], tp[1], offset))
        except KafkaException:  # not being fetched (an error stopped it): assign every partition again
            at = {**positions, tp: offset}
            self._consumer.assign([TopicPartition(t, p, at.get((t, p), OFFSET_BEGINNING)) for t, p in self._partitions])

    # ------------------------------------------------------------------ snapshots
    def _maybe_snapshot(self) -> None:
        if self.snapshots is None or self._since_snapshot == 0:
            return
        due_by_count = self._since_snapshot >= self.settings.dialog_snapshot_every_events
        due_by_time = self._clock() - self._last_snapshot >= self.settings.dialog_snapshot_every_s
        if due_by_count or due_by_time:
            try:
                self.snapshot_now()
            except SnapshotError as exc:  # the store is the truth; a snapshot is an optimisation
                log.error("%s; will retry at the next trigger", exc)
                self._since_snapshot, self._last_snapshot = 0, self._clock()

    def snapshot_now(self) -> Manifest:
        """Write a snapshot of the committed states and positions, then prune old ones."""
        if self.snapshots is None:
            raise SnapshotError("this worker has no snapshot store")
        manifest = self.snapshots.write(self._states.values(), self._positions, self._stats, self.region,
                                        sources=self.store.sources(), folded=self.store.folded())
        metrics.snapshot_seen(self.region, manifest.created_ms / 1000)
        self._since_snapshot, self._last_snapshot = 0, self._clock()
        try:
            self.snapshots.prune(self.settings.dialog_snapshot_retention)
        except Exception as exc:  # noqa: BLE001 - pruning is housekeeping: never stop the worker for it
            log.warning("snapshot pruning failed: %s", exc)
        return manifest


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m dialog.worker", description=__doc__.split("\n")[0])
    parser.add_argument("--region", required=True, help="region whose state store this worker fills")
    parser.add_argument("--no-snapshots", action="store_true", help="do not read or write S3 snapshots")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    return serve(Settings(), args.region, snapshots=not args.no_snapshots)


def serve(settings: Settings, region: str, *, snapshots: bool = True) -> int:
    """Rebuild if the store is empty, catch up, then consume until SIGTERM/SIGINT."""
    worker = DialogWorker.create(settings, region, snapshots=snapshots)
    _serve_metrics(settings, worker)

    def _stop(signum: int, _frame: Any) -> None:
        log.info("signal %d: stopping after this batch", signum)
        worker.stopping.set()

    signal.signal(signal.SIGTERM, _stop)
    signal.signal(signal.SIGINT, _stop)
    try:
        report = worker.rebuild()
        log.info("ready: %s", orjson.dumps(report.to_dict()).decode())
        worker.run()
    finally:
        worker.close()
    return 0


def _serve_metrics(settings: Settings, worker: DialogWorker) -> None:
    """/metrics on the worker's port; the snapshot age starts from the newest snapshot in S3."""
    from regionsync.metrics import serve_metrics

    if worker.snapshots is not None:
        try:
            found, _bad = worker.snapshots.manifests()
            for manifest in found:
                metrics.snapshot_seen(worker.region, manifest.created_ms / 1000)
        except Exception as exc:  # noqa: BLE001 - a metric must not stop the worker
            log.warning("reading snapshot manifests for the age metric: %s", exc)
    metrics.track_snapshot_age(worker.region, since=time.time())
    serve_metrics(settings.metrics_port("dialog", worker.region), settings.serve_host, f"dialog worker {worker.region}")


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
