"""What a batch of dialog records does to the sessions: the pure part of the dialog worker.

:class:`Fold` takes records in folding order (:mod:`dialog.merge` gives it), learns promotions
from control records, sends malformed records to the dead letters, sets aside the events a
promotion's cut fences (:mod:`dialog.fence`) and folds the others into their session with the
pure reducer. No I/O: :class:`dialog.worker.DialogWorker` commits the result in one store
transaction, and the reference fold of the drills (``drills/dialoglog.py``) uses it unchanged.
"""

from __future__ import annotations

import logging
from collections import Counter
from dataclasses import dataclass

from confluent_kafka import Message

from dialog import fence, reducer
from dialog.errors import MalformedEvent
from dialog.events import DialogEvent, KeyLookup, decode_opened
from dialog.fence import Promotion
from dialog.kafka_io import dead_letter, where
from dialog.reducer import Outcome
from dialog.state import ERASED, SessionState
from dialog.store import TP, FencedEvent, Origin, Stats
from mirror import policy
from mirror.provenance import provenance

log = logging.getLogger(__name__)

FENCED = "fenced"  # outcome label of events a promotion's cut set aside


class Fold:
    """The pure part of a batch: what a list of records does to the sessions, given the
    promotions known. No I/O; :class:`DialogWorker` commits the result."""

    def __init__(self, region: str, regions: list[str], promotions: list[Promotion],
                 states: dict[str, SessionState], positions: dict[TP, int], in_log_order: bool = True,
                 keys: KeyLookup | None = None) -> None:
        self.region = region
        self._keys = keys  # opens the sealed payloads (dialog/sealing.py); None: every one blank
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
        self.erased: list[str] = []  # sessions this batch erased: their keys go in the same commit
        self.unopened = 0  # events folded blank for want of their session's key

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
        event = pre if pre is not None else decoded(msg, self._keys)
        if isinstance(event, Blank):
            self.unopened += 1
            event = event.event
        if isinstance(event, MalformedEvent):
            log.warning("dead letter %s[%d]@%d: %s", topic, p, offset, event)
            self.dead.append((msg.key(), dead_letter(event.reason, event.detail, msg)))
            return
        by = fence.fenced_by(self.promotions, origin, p, source_offset, fence.event_ballot(event.epoch, event.origin))
        if by is not None:
            self.fenced.append(fenced_event(event, origin, p, source_offset, by, msg.value() or b""))
            self.outcomes[FENCED] += 1
            return
        self.folded[key] = max(self.folded.get(key, 0), source_offset + 1)
        self.apply(event)

    def apply(self, event: DialogEvent) -> None:
        sid = event.session_id
        before = self.touched.get(sid) or self._states.get(sid)
        result = reducer.step(before, event)
        self.outcomes[result.outcome.value] += 1
        if result.state.status == ERASED and (before is None or before.status != ERASED):
            self.erased.append(sid)
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
            dead_letters=len(self.dead), fenced=o[FENCED], erased=o[Outcome.ERASED.value], unopened=self.unopened,
        )


@dataclass(frozen=True)
class Blank:
    """An event whose sealed payload did not open for want of its session's key: folded with its
    personal fields blank (the session was erased, or its key never reached this region)."""

    event: DialogEvent

    @property
    def epoch(self) -> int:
        return self.event.epoch


Decoded = DialogEvent | MalformedEvent | Blank


def decoded(msg: Message, keys: KeyLookup | None = None) -> Decoded:
    try:
        event, whole = decode_opened(msg.key(), msg.value(), keys)
    except MalformedEvent as exc:
        return exc
    return event if whole else Blank(event)



def fenced_event(event: DialogEvent, origin: str, partition: int, source_offset: int, by: Promotion,
            raw: bytes) -> FencedEvent:
    """The record of an event a promotion's cut set aside (for the conflict report)."""
    return FencedEvent(origin, partition, source_offset, event.session_id, event.seq, event.event_id, event.epoch,
                       by.epoch, by.region, raw)
