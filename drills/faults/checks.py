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
* sessions: each region's logs (its own dialog topic and its copies of the others') are read to
  their ends and folded with the pure reducer and the promotions the region knows
  (drills/dialoglog.py); each region's store must hold exactly those states once it has consumed
  to the end, and the regions the same sessions; an acknowledged turn must be in every region's
  store, unless a promotion set it aside (then in none, and listed apart).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field

from dialog.pg_store import PostgresStore
from dialog.state import SessionState
from drills.dialoglog import LogCache, RegionLog, fold_region
from drills.diff import Drift
from drills.measure import turn_held
from drills.workload_model import DocChange, TurnAck, WorkloadResult
from indexer.plan import DocState
from regionsync.settings import Settings

log = logging.getLogger(__name__)


class LogFolder:
    """The fold of each region's dialog logs (drills/dialoglog.py), read to their ends at every
    check. Each region folds its own log and its copies of the others' with the promotions it knows
    (dialog/fence.py): the reference of its sessions. Logs are durable (each region's broker keeps
    them in its object store), so what was read stays valid: each check reads only what came since
    the last one (:class:`LogCache`) and folds everything again."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.logs: dict[str, RegionLog] = {}
        self.cache = LogCache()

    def advance(self) -> dict[str, RegionLog]:
        """Fold every region's logs up to their current ends."""
        self.logs = {region: fold_region(self.settings, region, cache=self.cache) for region in self.settings.regions}
        return self.logs

    @property
    def states(self) -> dict[str, SessionState]:
        """The sessions every region agrees on (the first region's fold, once the check passed)."""
        return dict(next(iter(self.logs.values())).states) if self.logs else {}

    @contextmanager
    def witness(self, every_s: float = 0.3) -> Iterator[None]:
        """Kept for scenarios written for the in-memory broker: durable logs need no witness."""
        yield

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
    settings: Settings, folder: LogFolder, acks: Sequence[TurnAck], log_lost: bool = False,
    set_aside: Sequence[TurnAck] = (),
) -> SessionCheck:
    """Every region's sessions against the fold of its logs, every region against the others, and
    every acknowledged turn looked up in every region.

    ``set_aside``: acknowledged turns a promotion's cut set aside (the old active region accepted
    them; the new one never received them: listed in the conflict report, dialog/fence.py): they
    must be missing everywhere, and are counted apart, not as lost. ``log_lost`` is kept for the
    old broker-loss scenario's callers; durable logs lose nothing, so it changes nothing."""
    logs = folder.advance()
    out = SessionCheck()
    stores: dict[str, dict[str, SessionState]] = {}
    for region in settings.regions:
        store = PostgresStore.for_region(settings, region)
        try:
            offsets = store.offsets()
            if any(offsets.get(tp, 0) < end for tp, end in logs[region].ends.items() if end > 0):
                out.caught_up = False
            stores[region] = {s.session_id: s for s in store.all_states()}
        finally:
            store.close()
    if not out.caught_up:
        return out
    first = settings.regions[0]
    for region, states in stores.items():
        folded = logs[region].states
        for sid in sorted(set(states) | set(folded)):
            if states.get(sid) != folded.get(sid):
                out.differing.append(f"{region}: {sid}")
            elif region != first and states.get(sid) != stores[first].get(sid):
                out.differing.append(f"{region}: {sid} (differs from {first}'s)")
    aside = {(a.session_id, a.turn) for a in set_aside}
    for ack in acks:
        where = [name for name, states in stores.items() if not turn_held(states.get(ack.session_id), ack)]
        what = f"{ack.session_id} turn {ack.turn} (seq <= {ack.last_seq})"
        if (ack.session_id, ack.turn) in aside:
            if len(where) != len(stores):
                out.differing.append(f"{what}: set aside by a promotion but held in "
                                     f"{', '.join(r for r in stores if r not in where)}")
            out.log_lost_turns.append(what)
        elif where:
            out.lost_turns.append(f"{what} missing in {', '.join(where)}")
    return out


def covers(state: SessionState | None, logged: SessionState | None) -> bool:
    """Does ``state`` hold everything ``logged`` (a fold of part of the log) holds?"""
    if logged is None:
        return True
    if state is None or state.last_seq < logged.last_seq:
        return False
    mine = {(t.seq, t.role, t.text) for t in state.turns}
    return all((t.seq, t.role, t.text) in mine for t in logged.turns)


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
    from indexer.milvus_reader import MilvusIndexReader

    out: dict[str, dict[str, DocState]] = {}
    unread: list[str] = []
    for region in regions:
        sink = MilvusIndexReader.for_region(settings, region)
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
    set_aside: Callable[[], Sequence[TurnAck]] | None = None,
) -> EndState:
    """Poll until every region equals the source, every session the log, and every region has
    applied every committed version (or a later one); the time taken. At the timeout, what is
    still missing is lost: counted from each region's last reading."""
    from drills.reconcile import scan

    started = clock()
    acks = result.acks if result is not None else ()
    changes = result.doc_changes if result is not None else ()
    applied: dict[str, dict[str, DocState]] = {}
    report_at = started + 30.0
    while True:
        try:
            drifts = scan(settings, settings.regions).drifts
            sessions = check_sessions(settings, folder, acks, log_lost, set_aside() if set_aside else ())
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
        if clock() >= report_at:  # a long wait says what it waits for (a trial once took 163 s, unexplained)
            report_at += 30.0
            log.info("end check after %.0fs, still: %s", clock() - started, _still(drifts, sessions, lost, unread))
        time.sleep(interval_s)


def _still(drifts: Sequence[object], sessions: SessionCheck, lost: Sequence[object], unread: Sequence[str]) -> str:
    found = [*(f"drift {d}" for d in drifts[:3]), *(f"session {s}" for s in sessions.differing[:3]),
             *(f"turn {t}" for t in sessions.lost_turns[:3]), *(f"version {v}" for v in lost[:3]),
             *(f"{r} unread" for r in unread), *([] if sessions.caught_up else ["sessions not caught up"])]
    return "; ".join(found) or "nothing"
