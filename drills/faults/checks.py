"""The end of every trial: every region compared with the source, every region's sessions with a
fold of the dialog log, and everything the workload saw acknowledged looked up.

``wait_converged`` polls until both hold or the timeout passes, then says what differs:

* documents: reconcile's scan (drills/reconcile.py): each document a region holds differently
  from the source (table + CMS topic), by class; every differing document is stale;
* committed versions: every change the workload committed (not only each document's newest) is
  looked up in each region's bookkeeping (``documents_versions``, the version the region applied
  next to its vectors); a change the region's state is older than is lost there
  (:func:`lost_versions` says exactly when). This is counted from what each region applied,
  whether or not the region converged;
* sessions: the log is read to its end and folded with the pure reducer (incrementally: the
  folder keeps its states and positions between checks, and starts over if the log's offsets
  went back, i.e. the broker lost it); each region's store must hold exactly those states once it
  has consumed to the end; an acknowledged turn must be in the fold, with its text, and in every
  region's store.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field

from confluent_kafka import Message, TopicPartition

from dialog.errors import DialogError, MalformedEvent
from dialog.events import decode
from dialog.reducer import fold
from dialog.state import SessionState
from dialog.store import PostgresStore
from drills.diff import Drift
from drills.errors import BadInput
from drills.kafka_io import reader, watermarks
from drills.workload import DocChange, TurnAck, WorkloadResult
from indexer.plan import DocState
from regionsync.settings import Settings

log = logging.getLogger(__name__)


class LogFolder:
    """The dialog log folded so far; :meth:`advance` reads what was appended since."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.positions: dict[int, int] = {}
        self.last: dict[int, tuple[bytes | None, bytes | None]] = {}  # the last record folded, per partition
        self.states: dict[str, SessionState] = {}
        self.restarts = 0  # times the log turned out to be another one (a broker that lost its topics)

    def ends(self) -> dict[int, int]:
        try:
            return {p: end for p, (_low, end) in watermarks(self.settings.kafka_bootstrap,
                                                            self.settings.dialog_topic, probe=True).items()}
        except BadInput:
            return {}

    def advance(self) -> dict[int, int]:
        """Fold up to the log's current end; returns that end."""
        ends = self.ends()
        if ends and self._another_log(ends):
            log.warning("the dialog log is not the one folded so far (ends %s, folded to %s): it lost its history; "
                        "folding the new log from its start", ends, self.positions)
            self.restarts += 1
            self.positions, self.last = {}, {}
            # The sessions folded from the lost log stay: the regions' stores hold them too, and
            # the new log's events continue them (their sequence numbers go on).
        todo = {p: end for p, end in ends.items() if end > self.positions.get(p, 0)}
        if todo:
            events = []
            for msg in self._read(todo):
                self.last[int(msg.partition() or 0)] = (msg.key(), msg.value())
                try:
                    events.append(decode(msg.key(), msg.value()))
                except MalformedEvent:
                    continue
            self.states = fold(events, self.states)
            self.positions.update(todo)
        return ends

    def _another_log(self, ends: dict[int, int]) -> bool:
        """Offsets went back, or the record before a folded position is not the one folded there
        (the log was recreated and refilled past it)."""
        folded = {p: pos for p, pos in self.positions.items() if pos > 0}
        if any(ends.get(p, 0) < pos for p, pos in folded.items()):
            return True
        if not folded:
            return False
        found = {int(m.partition() or 0): (m.key(), m.value())
                 for m in self._read(folded, start={p: pos - 1 for p, pos in folded.items()}, timeout_s=10.0)}
        return any(found.get(p) != self.last.get(p) for p in folded)

    def adopt(self, region: str) -> None:
        """Take ``region``'s sessions as the fold so far (after the log lost events every region
        still holds; checked equal across regions and covering the log before this is called)."""
        store = PostgresStore.for_region(self.settings, region)
        try:
            self.states.update({st.session_id: st for st in store.all_states()})
        finally:
            store.close()

    @contextmanager
    def witness(self, every_s: float = 0.3) -> Iterator[None]:
        """Fold the log in the background (e.g. until a broker loses it, so the fold saw what it held)."""
        stop = threading.Event()

        def run() -> None:
            while not stop.wait(every_s):
                try:
                    self.advance()
                except Exception as exc:  # noqa: BLE001 - the broker is down for a while: keep trying
                    log.debug("witness: %s", exc)

        thread = threading.Thread(target=run, name="dialog-log-witness", daemon=True)
        thread.start()
        try:
            yield
        finally:
            stop.set()
            thread.join(30)

    def _read(self, ends: dict[int, int], start: dict[int, int] | None = None, timeout_s: float = 60.0) -> list[Message]:
        """The records from the folded positions (or ``start``) to ``ends``, in partition order."""
        first = start if start is not None else self.positions
        consumer = reader(self.settings.kafka_bootstrap, "regionsync-faults-folder")
        try:
            consumer.assign([TopicPartition(self.settings.dialog_topic, p, first.get(p, 0)) for p in ends])
            out: dict[int, list[Message]] = {p: [] for p in ends}
            done: set[int] = set()
            deadline = time.monotonic() + timeout_s
            while len(done) < len(ends):
                if time.monotonic() > deadline:
                    if start is not None:
                        break  # a single record looked up: not there
                    raise DialogError(f"reading the dialog log: stopped short of {ends} after {timeout_s:.0f}s")
                for msg in consumer.consume(1000, 0.2):
                    if msg.error() is not None:
                        continue
                    p, offset = int(msg.partition() or 0), int(msg.offset() or 0)
                    if offset < ends[p]:
                        out[p].append(msg)
                    if offset >= ends[p] - 1:
                        done.add(p)
            return [m for p in sorted(out) for m in out[p]]
        finally:
            consumer.close()


@dataclass
class SessionCheck:
    caught_up: bool = True
    differing: list[str] = field(default_factory=list)  # "region: session" whose state != the fold
    lost_turns: list[str] = field(default_factory=list)  # acknowledged turns missing from a region (or the log)
    log_lost_turns: list[str] = field(default_factory=list)  # acknowledged turns the log lost (regions keep them)

    @property
    def ok(self) -> bool:
        return self.caught_up and not self.differing and not self.lost_turns


def check_sessions(
    settings: Settings, folder: LogFolder, acks: Sequence[TurnAck], log_lost: bool = False
) -> SessionCheck:
    """Every region's sessions against the fold of the log, and every acknowledged turn looked up.

    ``log_lost``: the log itself lost events (a broker that lost its data): a region's session
    then cannot equal a fold of what is left. What must hold instead: every acknowledged turn is
    in every region; the regions hold the same sessions; each region's session has everything the
    log still has (the folder's witness fold, which saw the old log up to the loss and the new
    one after it). The turns the log lost are counted apart (:attr:`SessionCheck.log_lost_turns`)."""
    ends = folder.advance()
    out = SessionCheck()
    stores: dict[str, dict[str, SessionState]] = {}
    for region in settings.regions:
        store = PostgresStore.for_region(settings, region)
        try:
            offsets = store.offsets()
            if any(offsets.get(p, 0) < end for p, end in ends.items() if end > 0):
                out.caught_up = False
            stores[region] = {s.session_id: s for s in store.all_states()}
        finally:
            store.close()
    if not out.caught_up:
        return out
    regions = list(stores)
    for region, states in stores.items():
        for sid in sorted(set(states) | set(folder.states)):
            mine, logged = states.get(sid), folder.states.get(sid)
            if log_lost:
                same_elsewhere = all(stores[r].get(sid) == mine for r in regions)
                if not same_elsewhere or not covers(mine, logged):
                    out.differing.append(f"{region}: {sid}")
            elif mine != logged:
                out.differing.append(f"{region}: {sid}")
    for ack in acks:
        where = [name for name, states in stores.items() if not _holds(states.get(ack.session_id), ack)]
        in_log = _holds(folder.states.get(ack.session_id), ack)
        what = f"{ack.session_id} turn {ack.turn} (seq <= {ack.last_seq})"
        if where or (not in_log and not log_lost):
            out.lost_turns.append(f"{what} missing in {', '.join(where + ([] if in_log else ['log']))}")
        elif not in_log:
            out.log_lost_turns.append(what)
    return out


def covers(state: SessionState | None, logged: SessionState | None) -> bool:
    """Does ``state`` hold everything ``logged`` (a fold of part of the log) holds?"""
    if logged is None:
        return True
    if state is None or state.last_seq < logged.last_seq:
        return False
    mine = {(t.seq, t.role, t.text) for t in state.turns}
    return all((t.seq, t.role, t.text) in mine for t in logged.turns)


def _holds(state: SessionState | None, ack: TurnAck) -> bool:
    return (state is not None and state.last_seq >= ack.last_seq
            and any(t.role == "user" and t.text == ack.text for t in state.turns))


@dataclass
class EndState:
    converged: bool
    seconds: float
    drifts: list[Drift]
    sessions: SessionCheck
    lost_versions: list[str]  # committed document versions a region never applied (lost_versions)

    @property
    def stale_docs(self) -> list[str]:
        return sorted({f"{d.doc_id} ({d.kind.value} in {d.region}: {d.detail})" for d in self.drifts})

    @property
    def lost(self) -> list[str]:
        return self.lost_versions + self.sessions.lost_turns

    @property
    def stale_count(self) -> int:
        return len({d.doc_id for d in self.drifts})


@dataclass(frozen=True)
class LostVersion:
    region: str
    change: DocChange
    held: DocState | None  # the region's bookkeeping row for the document (None: it has none)

    def __str__(self) -> str:
        c, h = self.change, self.held
        holds = "no version of it" if h is None else f"version {h.version}{' (deleted)' if h.deleted else ''}"
        return f"{c.doc_id} {c.op} at LSN {c.lsn_lo}..{c.lsn_hi} not applied in {self.region}, which holds {holds}"


def version_held(change: DocChange, later: Sequence[DocChange], state: DocState | None) -> bool:
    """Has a region whose bookkeeping row for the document is ``state`` applied ``change`` or a
    later committed change of the document? ``later``: the document's committed changes after
    ``change``, in commit order.

    * ``state.version >= change.lsn_lo``: the region applied ``change`` (its version, the change's
      WAL position, lies in ``[lsn_lo, lsn_hi)``) or a later change of the row (which lies past
      ``lsn_hi``: the row lock orders them). The bookkeeping row is written after the chunks, so
      it never claims a version whose chunks are not there; and the version guard never lowers it.
    * the region holds the document absent (no row, or a deleted marker of any version) and
      ``change`` or a later change is a delete: the region's state is that delete's. It may have
      got there without applying the versions before it (they were superseded before it read
      them: every record is a document's whole state), or by a tombstone or a repair's delete
      record, whose versions are lower than the delete's WAL position.
    """
    if state is not None and state.version >= change.lsn_lo:
        return True
    absent = state is None or state.deleted
    return absent and (change.deleted or any(c.deleted for c in later))


def lost_versions(changes: Sequence[DocChange], applied: Mapping[str, Mapping[str, DocState]]) -> list[LostVersion]:
    """Every committed change a region never applied, per region.

    A committed change of a document is **lost for a region** when the region never held it nor
    any later committed change of the document: the region's final state of the document is older
    than the change (:func:`version_held`). Versions only grow in a region (the version guard) and
    its bookkeeping rows are never removed, so the final state says what the region ever reached:
    a version superseded before the region got to it is not lost (the newer record replaced it),
    a version the region's state stops short of is, however the region compares with the source
    at the end. ``applied``: per region, its bookkeeping rows (doc id -> state)."""
    history: dict[str, list[DocChange]] = {}
    for change in sorted(changes, key=lambda c: c.lsn_lo):
        history.setdefault(change.doc_id, []).append(change)
    out: list[LostVersion] = []
    for region, states in applied.items():
        for doc_id, doc_changes in sorted(history.items()):
            state = states.get(doc_id)
            for i, change in enumerate(doc_changes):
                if not version_held(change, doc_changes[i + 1:], state):
                    out.append(LostVersion(region, change, state))
    return out


def applied_states(settings: Settings, regions: Sequence[str],
                   last: Mapping[str, Mapping[str, DocState]]) -> tuple[dict[str, dict[str, DocState]], list[str]]:
    """Every region's bookkeeping rows, and the regions that could not be read. A region that does
    not answer keeps its reading from ``last``: versions only grow, so an older reading can only
    make a change look lost, never hide one."""
    from indexer.sink import RegionSink

    out: dict[str, dict[str, DocState]] = {}
    unread: list[str] = []
    for region in regions:
        sink = RegionSink.for_region(settings, region)
        try:
            out[region] = sink.doc_states()
        except Exception as exc:  # noqa: BLE001 - a region still coming back: its last reading stands
            log.info("end check: %s's bookkeeping not readable yet: %s", region, exc)
            out[region] = dict(last.get(region, {}))
            unread.append(region)
        finally:
            sink.close()
    return out, unread


def wait_converged(
    settings: Settings,
    folder: LogFolder,
    result: WorkloadResult | None,
    timeout_s: float,
    interval_s: float = 1.0,
    clock: Callable[[], float] = time.monotonic,
    log_lost: bool = False,
) -> EndState:
    """Poll until every region equals the source, every session the log, and every region has
    applied every committed version (or a later one); the time taken. At the timeout, what is
    still missing is lost: counted from each region's last reading."""
    from drills.reconcile import scan

    started = clock()
    acks = result.acks if result is not None else ()
    changes = result.doc_changes if result is not None else ()
    applied: dict[str, dict[str, DocState]] = {}
    while True:
        try:
            drifts = scan(settings, settings.regions).drifts
            sessions = check_sessions(settings, folder, acks, log_lost)
        except Exception as exc:  # noqa: BLE001 - a region or the broker still coming back: not yet
            log.info("end check: not readable yet: %s", exc)
            drifts, sessions = [], SessionCheck(caught_up=False, differing=[f"unreadable: {exc}"])
        applied, unread = applied_states(settings, settings.regions, applied)
        lost = lost_versions(changes, applied)
        done = not drifts and sessions.ok and not lost and not unread
        if done or clock() - started > timeout_s:
            detail = [f"{v}{' (its last reading: it did not answer at the end)' if v.region in unread else ''}"
                      for v in lost]
            return EndState(done, clock() - started, drifts, sessions, detail)
        time.sleep(interval_s)
