"""The dialog worker: folds a region's session-event logs into its state store.

Run as a process by :mod:`dialog.process` (``python -m dialog.process --region north``).

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

A promotion learned after this store folded events it fences: the worker folds its logs again
from their start (:mod:`dialog.refold` says why).

"The end of the log" (:meth:`DialogWorker.catch_up`): tansu reports a high-water mark that can
be lower than the real end (the base offset of the last batch + 1, and after a broker restart
1 until the next write), so reaching it does not mean the partition is drained. The worker
counts as caught up only when every partition is at or past the reported end AND
``dialog_idle_polls`` polls in a row returned nothing.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Sequence
from typing import Protocol

import psycopg
from confluent_kafka import Consumer, KafkaError, Message

from dialog import fence, metrics
from dialog.courier import pull_keys
from dialog.errors import DialogError, PromotionsChanged, SnapshotError
from dialog.fence import Promotion
from dialog.fold import Fold
from dialog.kafka_io import DeadLetters, consumer_config
from dialog.keys import keys_for, lookup
from dialog.logcheck import HoleProbe, KafkaLogReader, LogReader, find_moved, report_moved, restart_moved
from dialog.logs import RegionLogs
from dialog.merge import Merger
from dialog.pg_store import PostgresStore
from dialog.rebuild import RebuildReport, rebuild
from dialog.refold import Logs, fold_from_start
from dialog.snapshot_schedule import SnapshotSchedule
from dialog.snapshots import Manifest, SnapshotStore
from dialog.state import SessionState
from dialog.store import TP, Origin, StateStore, Stats
from mirror import policy
from regionsync.kafka import EndsUnknown, new_consumer
from regionsync.settings import Settings

log = logging.getLogger(__name__)

CHECK_EVERY_S = 5.0  # how often an idle worker checks its positions, topics and the store's promotions


class DeadLetterSink(Protocol):
    def send(self, records: Sequence[tuple[bytes | None, bytes]]) -> None: ...


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
        self._logs = RegionLogs(consumer, region, self.topic, self.dialog_topics, self.control_topics)
        self._new_consumer = consumer_factory
        self._dead = dead_letters
        self._clock = clock
        self._positions: dict[TP, int] = {}
        self._states: dict[str, SessionState] = {}
        self._promotions: list[Promotion] = []
        self._stats = Stats()  # totals as stored (they travel with snapshots)
        self._schedule = SnapshotSchedule(settings, region, snapshots, clock)
        self.stopping = threading.Event()  # set (e.g. by a signal handler) to stop after the current batch
        self._reader = log_reader  # checks the stored positions against the log (dialog/logcheck.py)
        self._checked_at = float("-inf")
        self._holes = HoleProbe(log_reader, clock)  # a log whose end has no record (dialog/logcheck.py)
        self._merger = Merger()
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
        self._logs.partitions = self._logs.discover()
        self._logs.assign(self._positions)
        self._merger.reset(self._positions)
        log.info("dialog worker %s: %d sessions, %d promotions known, positions %s", self.region, len(self._states),
                 len(self._promotions), {f"{t}[{p}]": o for (t, p), o in sorted(self._positions.items())} or "start")
        self._refold_if_tainted(self._promotions)
        self.check_positions()

    def rebuild(self) -> RebuildReport:
        """Restore the store if it is empty, start, and fold the log to its end (:func:`dialog.rebuild.rebuild`).
        An empty store lost its keys too: the other regions' are pulled first (dialog/courier.py)."""
        if self.store.is_empty():
            pull_keys(self.settings, self.region, self.store.keyring)
        return rebuild(self)

    def close(self) -> None:
        self._logs.close()
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
        msgs = self._logs.consume(max_events or self.settings.dialog_batch_max_events,
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
            elif self._logs.at_reported_end(self._positions, self._holes.known):
                idle += 1
            else:
                idle = 0
        return consumed

    def _at_end(self, tp: TP) -> bool:
        """Everything of ``tp`` the broker has was fetched (or nothing is left below its end)."""
        high = self._logs.fetched_high(tp)  # -1: no fetch answer yet
        at = max(self._positions.get(tp, 0), self._merger.fetched_to.get(tp, 0))
        if high >= 0 and at >= high:
            self._holes.clear(tp)
        return high >= 0 and (at >= high or self._holes.hole(tp, at, high))

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
            found = self._logs.discover()
        except DialogError as exc:
            log.debug("%s", exc)
            found = self._logs.partitions
        if set(found) != set(self._logs.partitions):
            self._logs.partitions = found
            self._logs.assign(self._positions)
        self._learn_promotions()
        if self._reader is None:
            return []
        found_moved = find_moved(self._reader, self._logs.streams, self._positions, self._states,
                                 lambda: {e.event_id for e in self.store.fenced()})
        for m in found_moved:
            report_moved(self.region, m.tp, m.stored, m.low, m.high, m.verdict)
            self.store.commit([], {m.tp: m.low}, {m.tp: m.stored}, Stats())
            self._positions[m.tp] = m.low
            self._merger.forget(m.tp, m.low)
            self._logs.seek(m.tp, m.low, self._positions)
        return [m.tp for m in found_moved]

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

    def _process(self, msgs: list[Message]) -> None:
        opener = lookup(keys_for(self.store.keyring, msgs, self.control_topics))
        fold = Fold(self.region, self.settings.regions, self._promotions, self._states, self._positions,
                    keys=opener)
        for msg in msgs:
            err = msg.error()
            if err is not None:
                if err.fatal():
                    raise DialogError(f"consumer failed: {err}")
                if err.code() == KafkaError._AUTO_OFFSET_RESET and msg.partition() is not None:
                    tp = (str(msg.topic()), int(msg.partition() or 0))
                    fold.positions[tp] = restart_moved(self._logs, self.region, tp, fold.positions)
                    self._merger.forget(tp, fold.positions[tp])
                elif err.code() != KafkaError._PARTITION_EOF:
                    log.warning("consumer error (retrying): %s", err)
                continue
            if str(msg.topic()) in self.control_topics:
                fold.control(msg)  # first: a promotion read now fences records folded below
            else:
                self._merger.add(msg, opener)
        for msg, event in self._merger.take(self._logs.streams, self._at_end):
            fold.event(msg, event)
        self._logs.flow_control(self._merger.buffers)
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
                known_promotions=[(p.epoch, p.region) for p in self._promotions], erased=fold.erased,
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
        self._schedule.changes += len(fold.touched) + batch.fenced + batch.dead_letters
        self._promotions = fold.promotions
        metrics.batch_committed(self.region, fold)
        if fold.erased:
            self._erased(fold.erased)
        if fold.new_promotions:
            log.info("dialog worker %s: learned promotions %s", self.region,
                     [(p.epoch, p.region) for p in fold.new_promotions])
            self._refold_if_tainted(fold.new_promotions, folded_before)

    def _erased(self, sessions: list[str]) -> None:
        """Sessions this batch erased (their keys went with the commit): their states are
        tombstones now, and no snapshot may keep what they were, so a new snapshot is written at
        once and every older one deleted."""
        log.warning("dialog worker %s: erased %d sessions (keys deleted): %s", self.region, len(sessions),
                    sessions[:5])
        self._schedule.erased()
        if self.snapshots is not None:
            try:
                self.snapshot_now()
            except SnapshotError as exc:  # the older snapshots keep those sessions until the next one
                self._schedule.failed(exc)

    def _rewind(self) -> None:
        """Read every log again from the committed positions (what was buffered is dropped)."""
        self._merger.reset(self._positions)
        self._logs.assign(self._positions)

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
        consumer = self._new_consumer() if self._new_consumer is not None else self._logs.consumer
        try:
            done = fold_from_start(self.settings, self.region, self.store.promotions(), consumer,
                                   Logs(self._logs.partitions, self.dialog_topics, self.control_topics),
                                   self.stopping, timeout_s, self.store.keyring)
        finally:
            if consumer is not self._logs.consumer:
                consumer.close()
        if done is None:
            return  # stopping
        states, fold = done
        self.store.replace_all(states.values(), fold.positions, fold.stats(), fold.sources, fold.folded)
        if fold.erased:
            # Erasures this store had not folded yet (they were in the logs' tail): the worker goes
            # on past them, so their keys go now.
            self.store.keyring.erase(fold.erased)
        if fold.fenced or fold.new_promotions:
            self.store.commit([], {}, {}, Stats(), fenced=fold.fenced, promotions=fold.new_promotions)
        log.warning("dialog worker %s: folded again in %.2fs: %d sessions, %d events set aside", self.region,
                    time.monotonic() - t0, len(states), len(fold.fenced))
        self.start_after_refold()
        if fold.erased:
            self._erased(fold.erased)

    def start_after_refold(self) -> None:
        self._positions = self.store.offsets()
        self._states = {s.session_id: s for s in self.store.all_states()}
        self._stats = self.store.stats()
        self._promotions = self.store.promotions()
        self._rewind()

    # ------------------------------------------------------------------ snapshots
    def _maybe_snapshot(self) -> None:
        if self._schedule.due():
            try:
                self.snapshot_now()
            except SnapshotError as exc:  # the store is the truth; a snapshot is an optimisation
                self._schedule.failed(exc)

    def snapshot_now(self) -> Manifest:
        """Write a snapshot of the committed states and positions, then prune old ones (dialog/snapshot_schedule.py)."""
        return self._schedule.write(self._states.values(), self._positions, self._stats, self.store.sources(),
                                    self.store.folded())
