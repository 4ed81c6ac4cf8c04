"""The pure reducer: ``apply(state, event) -> state``. No I/O, no clock, no globals.

Rules, checked in this order:

* an event whose ``seq`` is at or below the state's ``last_seq`` changes nothing: it is a
  redelivery (``DUPLICATE``) or, if the state remembers a *different* event id for that seq, a
  second writer on the same session (``CONFLICT``), or, if it falls in a recorded gap, an event
  that arrived after later ones were applied (``LATE``); in every case the first one wins;
* an event whose ``event_id`` was applied recently under another seq changes nothing (a producer
  that re-sent an event with a new number);
* an event past a gap (``seq > last_seq + 1``) is applied, and the missing range is recorded in
  ``state.gaps`` and reported as ``GAP``: a malformed event in the middle of a session must not
  freeze the rest of it, but the hole stays visible in the state and in the worker's counters.

Before all of these: ``session_erased`` turns any state, whatever its seq, into a tombstone built
from the erasure event alone, and an erased session ignores every event (``ERASED``). So the
tombstone is the same in every region and in every rebuild, whatever they read before it: a
region that still had the session's key and one that never had it end equal.

Payload handling is one ``singledispatch`` function per event type.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from enum import StrEnum
from functools import singledispatch
from typing import Any

from dialog.errors import DialogError
from dialog.events import (
    BotReplied,
    DialogEvent,
    HandoffRequested,
    IntentDetected,
    SessionClosed,
    SessionErased,
    SessionStarted,
    SlotCleared,
    SlotFilled,
    ToolCalled,
    UserUtterance,
)
from dialog.state import CLOSED, ERASED, HANDOFF, OPEN, RECENT, SessionState, ToolCall, Turn


class Outcome(StrEnum):
    APPLIED = "applied"
    GAP = "gap"  # applied, after a hole in the sequence
    DUPLICATE = "duplicate"  # not applied
    CONFLICT = "conflict"  # not applied: another event already holds this seq
    LATE = "late"  # not applied: it belongs in a hole that later events already stepped over
    ERASED = "erased"  # not applied: the session was erased


@dataclass(frozen=True)
class Step:
    state: SessionState
    outcome: Outcome
    missing: tuple[int, int] | None = None  # the hole, for GAP


def step(state: SessionState | None, event: DialogEvent) -> Step:
    """Apply one event and say what happened."""
    if state is None:
        state = SessionState(session_id=event.session_id)
    elif state.session_id != event.session_id:
        raise DialogError(f"event of session {event.session_id!r} applied to session {state.session_id!r}")
    if state.status == ERASED:
        return Step(state, Outcome.ERASED)
    if isinstance(event, SessionErased):
        return Step(tombstone(event), Outcome.APPLIED)
    if event.seq <= state.last_seq:
        for seq, event_id in state.recent:
            if seq == event.seq and event_id != event.event_id:
                return Step(state, Outcome.CONFLICT)
        if any(first <= event.seq <= last for first, last in state.gaps):
            return Step(state, Outcome.LATE)
        return Step(state, Outcome.DUPLICATE)
    for _, event_id in state.recent:  # a plain loop: this runs for every event the worker folds
        if event_id == event.event_id:
            return Step(state, Outcome.DUPLICATE)

    missing = (state.last_seq + 1, event.seq - 1) if event.seq > state.last_seq + 1 else None
    changes = _when(event, state)
    changes["last_seq"] = event.seq
    changes["applied"] = state.applied + 1
    changes["updated_ms"] = event.ts_ms
    changes["origin"] = event.origin
    changes["recent"] = (*state.recent, (event.seq, event.event_id))[-RECENT:]
    if missing:
        changes["gaps"] = (*state.gaps, missing)
    return Step(_evolve(state, changes), Outcome.GAP if missing else Outcome.APPLIED, missing)


def tombstone(event: SessionErased) -> SessionState:
    """What is left of an erased session: its id, that it was erased, when and by which region."""
    return SessionState(session_id=event.session_id, status=ERASED, last_seq=event.seq, updated_ms=event.ts_ms,
                        origin=event.origin, recent=((event.seq, event.event_id),))


def _evolve(state: SessionState, changes: dict[str, Any]) -> SessionState:
    """``dataclasses.replace`` without its per-call field introspection (20x faster; the worker
    folds every event through here). Same result: a new frozen instance, the old one untouched."""
    new = object.__new__(SessionState)
    new.__dict__.update(state.__dict__)
    new.__dict__.update(changes)
    return new


def apply(state: SessionState | None, event: DialogEvent) -> SessionState:
    return step(state, event).state


def fold(events: Iterable[DialogEvent], states: dict[str, SessionState] | None = None) -> dict[str, SessionState]:
    """Fold events of any number of sessions, in the given order, into states by session id."""
    out = dict(states or {})
    for event in events:
        out[event.session_id] = apply(out.get(event.session_id), event)
    return out


# ---------------------------------------------------------------------------- payloads


# Each returns the fields the event changes (the common bookkeeping is added by ``step``).
@singledispatch
def _when(event: DialogEvent, state: SessionState) -> dict[str, Any]:
    raise DialogError(f"no reducer for {type(event).__name__}")


@_when.register
def _(event: SessionStarted, state: SessionState) -> dict[str, Any]:
    return dict(
        status=OPEN,
        channel=event.channel,
        customer_id=event.customer_id,
        locale=event.locale,
        started_ms=event.ts_ms,
        handoff_reason=None,
    )


@_when.register
def _(event: UserUtterance, state: SessionState) -> dict[str, Any]:
    return dict(turns=(*state.turns, Turn(event.seq, "user", event.text, event.ts_ms)))


@_when.register
def _(event: IntentDetected, state: SessionState) -> dict[str, Any]:
    return dict(intent=event.intent)


@_when.register
def _(event: SlotFilled, state: SessionState) -> dict[str, Any]:
    return dict(slots={**state.slots, event.name: event.value})


@_when.register
def _(event: SlotCleared, state: SessionState) -> dict[str, Any]:
    return dict(slots={k: v for k, v in state.slots.items() if k != event.name})


@_when.register
def _(event: ToolCalled, state: SessionState) -> dict[str, Any]:
    call = ToolCall(event.seq, event.name, event.arguments, event.result, event.error)
    return dict(tool_calls=(*state.tool_calls, call))


@_when.register
def _(event: BotReplied, state: SessionState) -> dict[str, Any]:
    turn = Turn(event.seq, "bot", event.text, event.ts_ms, event.sources)
    return dict(turns=(*state.turns, turn), confirmed=(*state.confirmed, *event.confirmed))


@_when.register
def _(event: HandoffRequested, state: SessionState) -> dict[str, Any]:
    return dict(status=HANDOFF, handoff_reason=event.reason)


@_when.register
def _(event: SessionClosed, state: SessionState) -> dict[str, Any]:
    return dict(status=CLOSED)
