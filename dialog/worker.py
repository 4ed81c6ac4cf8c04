"""The dialog worker: folds the session-event topic into a region's state store.

    python -m dialog.worker --region north

Why a plain confluent-kafka consumer and not a Faust agent: the positions must live in the
state store's transaction (Faust commits them to the broker), Faust's exactly-once mode fails on
tansu, and a Faust agent does about 4k events/s on one core where this loop folds tens of
thousands (``python -m dialog.bench`` prints the figure; shared/STACK.md has Faust's).

Loop: consume a batch -> decode (malformed records -> dead-letter topic, acknowledged before
the commit) -> fold each event into its session's state with the pure reducer -> one store
transaction with the changed states, the new positions and the counters. Partitions are
assigned by hand (one worker per region; the store's compare-and-set on positions stops a
second one) and start at the stored positions, so a crash at any point loses nothing and
applies nothing twice. Every N events or T seconds the worker writes a snapshot to S3.

"The end of the log" (:meth:`DialogWorker.catch_up`): tansu reports a high-water mark that can
be lower than the real end (the base offset of the last batch + 1), so reaching it does not mean
the partition is drained. The worker counts as caught up only when every partition is at or past
the reported end AND ``dialog_idle_polls`` polls in a row returned nothing.
"""

from __future__ import annotations

import argparse
import logging
import signal
import sys
import threading
import time
from collections import Counter
from collections.abc import Callable, Sequence
from typing import Any, Protocol

import orjson
import psycopg
from confluent_kafka import OFFSET_BEGINNING, Consumer, KafkaError, KafkaException, Message, TopicPartition

from dialog import metrics, reducer
from dialog.errors import DialogError, MalformedEvent, SnapshotError
from dialog.events import decode
from dialog.kafka_io import DeadLetters, consumer_config, dead_letter, ensure_topic, partitions_of, where
from dialog.logcheck import KafkaLogReader, LogReader, Verdict, judge
from dialog.rebuild import RebuildReport, restore
from dialog.reducer import Outcome
from dialog.snapshots import Manifest, SnapshotStore
from dialog.state import SessionState
from dialog.store import PostgresStore, StateStore, Stats
from regionsync.settings import Settings

log = logging.getLogger(__name__)

CHECK_EVERY_S = 5.0  # how often an idle worker checks its positions are on the log it folded


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
    ) -> None:
        self.settings = settings
        self.region = region
        self.store = store
        self.snapshots = snapshots
        self.topic = store.topic
        self._consumer = consumer
        self._dead = dead_letters
        self._clock = clock
        self._positions: dict[int, int] = {}
        self._partitions: list[int] = []
        self._states: dict[str, SessionState] = {}
        self._stats = Stats()  # totals as stored (they travel with snapshots)
        self._since_snapshot = 0
        self._last_snapshot = clock()
        self.stopping = threading.Event()  # set (e.g. by a signal handler) to stop after the current batch
        self._reader = log_reader  # checks the stored positions against the log (dialog/logcheck.py)
        self._checked_at = float("-inf")

    @classmethod
    def create(cls, settings: Settings, region: str, *, snapshots: bool = True) -> DialogWorker:
        ensure_topic(settings, settings.dialog_topic)
        store = PostgresStore.for_region(settings, region)
        # "error", not "earliest": a stored position the log no longer has must be noticed (see
        # _log_moved), not silently read from the start, where every offset below the position
        # would be skipped as "already in the store".
        consumer = Consumer({**consumer_config(settings, f"regionsync-dialog-{region}"), "auto.offset.reset": "error"})
        snap = SnapshotStore.from_settings(settings) if snapshots else None
        reader = KafkaLogReader(settings, settings.dialog_topic, region)
        return cls(settings, region, store, consumer, DeadLetters(settings), snap, log_reader=reader)

    # ------------------------------------------------------------------ lifecycle
    def start(self) -> None:
        """Load the stored states and positions and assign every partition at its position.
        Call after the store holds what it should (:meth:`rebuild` does both)."""
        self._partitions = partitions_of(self._consumer, self.topic)
        self._positions = self.store.offsets()
        self._states = {s.session_id: s for s in self.store.all_states()}
        self._stats = self.store.stats()
        self._consumer.assign(
            [TopicPartition(self.topic, p, self._positions.get(p, OFFSET_BEGINNING)) for p in self._partitions]
        )
        log.info(
            "dialog worker %s: %d sessions, positions %s", self.region, len(self._states), self._positions or "start"
        )
        self.check_positions()

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
            positions=self.positions,
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
    def positions(self) -> dict[int, int]:
        return dict(self._positions)

    # ------------------------------------------------------------------ consuming
    def poll_once(self, max_events: int | None = None) -> int:
        """Consume and commit one batch; returns how many records it held (0: nothing came)."""
        msgs = self._consumer.consume(max_events or self.settings.dialog_batch_max_events,
                                      self.settings.dialog_poll_timeout_s)
        if msgs:
            self._process(msgs)
        self._maybe_snapshot()
        return len(msgs)

    def catch_up(self) -> int:
        """Consume to the end of the log (see the module docstring); returns records consumed."""
        consumed = idle = 0
        while idle < self.settings.dialog_idle_polls and not self.stopping.is_set():
            got = self.poll_once(self.settings.dialog_catchup_batch_events)
            if got:
                consumed += got
                idle = 0
            elif self._at_reported_end():
                idle += 1
            else:
                idle = 0
        return consumed

    def run(self) -> None:
        """Follow the log until :attr:`stopping` is set; check the positions while idle.

        The state store failing (its database restarting) does not end the worker: the batch was
        not committed, so it waits, reloads states and positions from the store (a commit whose
        answer was lost may have landed) and reads on from there. Seen under the fault suite:
        both regions' workers exited when Postgres was restarted, and their stores fell behind."""
        while not self.stopping.is_set():
            try:
                if not self.poll_once() and self._clock() - self._checked_at >= CHECK_EVERY_S:
                    self.check_positions()
            except psycopg.OperationalError as exc:
                log.warning("dialog worker %s: state store unavailable (%s); reloading from it when it is back",
                            self.region, exc)
                self._reload()

    def _reload(self, pause_s: float = 1.0) -> None:
        while not self.stopping.wait(pause_s):
            try:
                self.start()
                return
            except psycopg.OperationalError:
                continue

    def check_positions(self) -> list[int]:
        """Move every partition whose stored position is not on the folded log to the log's start
        (dialog/logcheck.py); returns those partitions."""
        self._checked_at = self._clock()
        if self._reader is None:
            return []
        moved = []
        for p in self._partitions:
            stored = self._positions.get(p, 0)
            marks = self._reader.watermarks(p) if stored > 0 else None
            if marks is None:
                continue  # nothing folded yet, or the broker does not answer: later
            low, high = marks
            record = self._reader.record_at(p, stored - 1) if stored - 1 >= low else None
            verdict = judge(stored, low, record, self._states)
            if verdict is Verdict.SAME_LOG:
                continue
            self._report_moved(p, stored, low, high, verdict)
            self.store.commit([], {p: low}, {p: stored}, Stats())
            self._positions[p] = low
            self._seek(p, low, self._positions)
            moved.append(p)
        return moved

    def _at_reported_end(self) -> bool:
        for p in self._partitions:
            low, high = self._consumer.get_watermark_offsets(TopicPartition(self.topic, p), timeout=5, cached=False)
            if self._positions.get(p, low) < high:
                return False
        return True

    def _process(self, msgs: list[Message]) -> None:
        positions = dict(self._positions)
        touched: dict[str, SessionState] = {}
        dead: list[tuple[bytes | None, bytes]] = []
        outcomes: Counter[Outcome] = Counter()
        for msg in msgs:
            err = msg.error()
            if err is not None:
                if err.fatal():
                    raise DialogError(f"consumer failed: {err}")
                if err.code() == KafkaError._AUTO_OFFSET_RESET and msg.partition() is not None:
                    positions[int(msg.partition() or 0)] = self._log_moved(int(msg.partition() or 0), positions)
                elif err.code() != KafkaError._PARTITION_EOF:
                    log.warning("consumer error (retrying): %s", err)
                continue
            p, offset = where(msg)
            if offset < positions.get(p, 0):
                continue  # already in the store (re-fetched after a seek)
            positions[p] = offset + 1
            try:
                event = decode(msg.key(), msg.value())
            except MalformedEvent as exc:
                log.warning("dead letter %s[%d]@%d: %s", msg.topic(), p, offset, exc)
                dead.append((msg.key(), dead_letter(exc.reason, exc.detail, msg)))
                continue
            sid = event.session_id
            before = touched.get(sid) or self._states.get(sid)
            result = reducer.step(before, event)
            outcomes[result.outcome] += 1
            if result.outcome is Outcome.GAP:
                log.warning("session %s: events %d..%d missing before seq %d", sid, *result.missing or (0, 0), event.seq)
            elif result.outcome is Outcome.CONFLICT:
                log.error("session %s: seq %d written twice with different events (two writers?)", sid, event.seq)
            if result.state is not before:
                touched[sid] = result.state
        batch = Stats(
            applied=outcomes[Outcome.APPLIED] + outcomes[Outcome.GAP],
            duplicates=outcomes[Outcome.DUPLICATE],
            conflicts=outcomes[Outcome.CONFLICT],
            late=outcomes[Outcome.LATE],
            gaps=outcomes[Outcome.GAP],
            dead_letters=len(dead),
        )
        if dead:
            self._dead.send(dead)  # before the commit: a dead letter is never lost
        moved = {p: o for p, o in positions.items() if o != self._positions.get(p)}
        expected = {p: self._positions[p] for p in moved if p in self._positions}
        self.store.commit(touched.values(), moved, expected, batch)
        self._positions = positions
        self._states.update(touched)
        self._stats = self._stats + batch
        self._since_snapshot += len(msgs)
        for outcome, n in outcomes.items():
            metrics.EVENTS.labels(self.region, outcome.value).inc(n)
        metrics.DEAD_LETTERS.labels(f"dialog:{self.region}").inc(len(dead))

    def _log_moved(self, partition: int, positions: dict[int, int]) -> int:
        """The consumer says the stored position of ``partition`` is not on the log any more (a
        broker that checks: Kafka's "offset out of range"); the new position, from the log's start."""
        stored = positions.get(partition, 0)
        low, high = self._consumer.get_watermark_offsets(TopicPartition(self.topic, partition), timeout=10, cached=False)
        self._report_moved(partition, stored, low, high, Verdict.RECREATED if stored >= high else Verdict.EXPIRED)
        self._seek(partition, low, positions)
        return int(low)

    def _report_moved(self, partition: int, stored: int, low: int, high: int, verdict: Verdict) -> None:
        """Past the log's end, or another event there: the log was recreated (a broker that lost its
        data) and starts again at low offsets; its new events continue the sessions (their sequence
        numbers go on) and must all be folded; the sessions folded so far stay. Below the log's
        start: retention removed events this store never folded; they are lost to it, and it says so."""
        if verdict is Verdict.RECREATED:
            log.error(
                "dialog log %s[%d] (offsets %d..%d) is not the log this store folded to %d: the log lost its "
                "history (recreated by a broker that lost its data); folding the new log from offset %d, "
                "sessions kept", self.topic, partition, low, high, stored, low,
            )
        else:
            log.error(
                "dialog log %s[%d] starts at %d but this store had folded it only to %d: %d events were removed "
                "before they were folded (retention) and are missing from this region's sessions",
                self.topic, partition, low, stored, low - stored,
            )
        metrics.LOG_RESETS.labels(self.region, verdict.value).inc()

    def _seek(self, partition: int, offset: int, positions: dict[int, int]) -> None:
        try:
            self._consumer.seek(TopicPartition(self.topic, partition, offset))
        except KafkaException:  # not being fetched (an error stopped it): assign every partition again
            at = {**positions, partition: offset}
            self._consumer.assign([TopicPartition(self.topic, p, at.get(p, OFFSET_BEGINNING)) for p in self._partitions])

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
        manifest = self.snapshots.write(self._states.values(), self._positions, self._stats, self.region)
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
