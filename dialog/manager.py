"""The dialog manager: one customer message in, the events of that turn out, a reply back.

    dm = DialogManager(KafkaPublisher(settings), sessions=store, region="east")
    dm.register_handler("inquire_order", InquireOrderHandler(orders.lookup))
    reply = dm.process({"text": "where is my order?", "intent": "inquire_order",
                        "slots": {"order_id": "A-1"}, "session_id": "s-42"})

One turn = session_started (first turn only) + user_utterance + intent_detected (when the intent
changes) + slot_filled/slot_cleared (for the slots the NLU extracted) + whatever the handler
records (tools, slots, handoff) + bot_replied (+ session_closed). :meth:`DialogManager.process`
returns the reply only after the broker acknowledged every one of those events: what the
customer is told is in the log, so the standby region will know it too.

A manager is the single writer of the sessions it serves (active/standby regions). It keeps the
states it wrote in memory and reads other sessions from its region's state store; after a
failover, start it once the region's worker has replayed the log (``dialog rebuild``).
"""

from __future__ import annotations

import logging
import time
from collections import OrderedDict
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

from dialog.errors import DialogError
from dialog.events import (
    BotReplied,
    DialogEvent,
    IntentDetected,
    SessionClosed,
    SessionErased,
    SessionStarted,
    UserUtterance,
    new_event_id,
)
from dialog.keys import SessionIsErased
from dialog.session import Session
from dialog.state import CLOSED, ERASED, NEW, SessionState

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Answer:
    """What a handler returns: the reply text, the sources it cites, the facts it confirms."""

    text: str
    sources: tuple[str, ...] = ()
    confirmed: tuple[str, ...] = ()
    close: bool = False  # end the session after this reply


@dataclass(frozen=True)
class Reply:
    session_id: str
    text: str
    sources: tuple[str, ...]
    confirmed: tuple[str, ...]
    handoff: bool
    last_seq: int
    events: int  # events written for this turn


class Handler(Protocol):
    def handle(self, session: Session) -> Answer: ...


class EventPublisher(Protocol):
    def publish(self, events: Sequence[DialogEvent]) -> Any:
        """Return once every event is durably acknowledged; raise ``DeliveryError`` otherwise."""
        ...


class SessionSource(Protocol):
    def get(self, session_id: str) -> SessionState | None: ...


class MemoryPublisher:
    """In-memory event log for unit tests."""

    def __init__(self) -> None:
        self.events: list[DialogEvent] = []

    def publish(self, events: Sequence[DialogEvent]) -> None:
        self.events.extend(events)


class HandoffHandler:
    """Default for intents nobody handles: hand the customer to a human, say so."""

    def handle(self, session: Session) -> Answer:
        session.handoff(reason=f"no handler for intent {session.intent!r}", queue="general")
        return Answer("Let me connect you with a colleague who can help with that.")


def _now_ms() -> int:
    return int(time.time() * 1000)


class DialogManager:
    def __init__(
        self,
        publisher: EventPublisher,
        sessions: SessionSource,
        region: str,
        *,
        clock: Callable[[], int] = _now_ms,
        new_id: Callable[[], str] = new_event_id,
        fallback: Handler | None = None,
        cache_size: int = 100_000,
        epoch: int = 0,
    ) -> None:
        self._publisher = publisher
        self._epoch = epoch  # the writing region's epoch: every event carries it (dialog/fence.py)
        self._sessions = sessions
        self._region = region
        self._clock = clock
        self._new_id = new_id
        self._fallback = fallback or HandoffHandler()
        self._handlers: dict[str, Handler] = {}
        self._cache: OrderedDict[str, SessionState] = OrderedDict()
        self._cache_size = cache_size

    def register_handler(self, intent: str, handler: Handler) -> None:
        self._handlers[intent] = handler

    def state(self, session_id: str) -> SessionState:
        cached = self._cache.get(session_id)
        if cached is not None:
            return cached
        return self._sessions.get(session_id) or SessionState(session_id=session_id)

    def process(self, message: Mapping[str, Any]) -> Reply:
        """Handle one customer message; raises ``DeliveryError`` if its events were not acknowledged
        (then nothing of this turn may be shown to the customer; the turn can be retried)."""
        session_id, text, intent, slots = _parse(message)
        state = self.state(session_id)
        if state.status == ERASED:
            raise SessionIsErased(f"session {session_id!r} was erased: start a new session")
        session = Session(state, text, self._make_event)
        if state.status in (NEW, CLOSED):
            session.record(
                SessionStarted,
                channel=str(message.get("channel", "")),
                customer_id=str(message.get("customer_id", "")),
                locale=str(message.get("locale", "")),
            )
        session.record(UserUtterance, text=text)
        if intent is not None and intent != session.intent:
            session.record(IntentDetected, intent=intent, confidence=float(message.get("confidence", 1.0)))
        for name, value in slots.items():
            if value is None:
                session.clear_slot(name)
            else:
                session.fill_slot(name, value)

        handler = self._handlers.get(session.intent or "", self._fallback)
        answer = handler.handle(session)
        session.record(BotReplied, text=answer.text, sources=tuple(answer.sources), confirmed=tuple(answer.confirmed))
        if answer.close:
            session.record(SessionClosed, reason="completed")

        self._publish(session)
        return Reply(
            session_id=session_id,
            text=answer.text,
            sources=tuple(answer.sources),
            confirmed=tuple(answer.confirmed),
            handoff=session.state.status == "handoff",
            last_seq=session.state.last_seq,
            events=len(session.pending),
        )

    def erase(self, session_id: str, reason: str = "") -> SessionState:
        """Publish the session's erasure (every region deletes its key and state on folding it);
        returns the tombstone. Erasing an erased session publishes nothing."""
        state = self.state(session_id)
        if state.status == ERASED:
            return state
        session = Session(state, "", self._make_event)
        session.record(SessionErased, reason=reason)
        self._publish(session)
        return session.state

    # ------------------------------------------------------------------ internals
    def _publish(self, session: Session) -> None:
        """Publish what the turn recorded, then remember the state it leads to."""
        try:
            self._publisher.publish(session.pending)
        except Exception:
            # Some events of the turn may have landed: forget what we believed, re-read next time.
            self._cache.pop(session.session_id, None)
            raise
        self._remember(session.state)

    def _make_event(self, cls: type[DialogEvent], state: SessionState, payload: dict[str, Any]) -> DialogEvent:
        return cls(
            session_id=state.session_id,
            seq=state.last_seq + 1,
            event_id=self._new_id(),
            ts_ms=self._clock(),
            origin=self._region,
            epoch=self._epoch,
            **payload,
        )

    def _remember(self, state: SessionState) -> None:
        self._cache[state.session_id] = state
        self._cache.move_to_end(state.session_id)
        while len(self._cache) > self._cache_size:
            self._cache.popitem(last=False)


def _parse(message: Mapping[str, Any]) -> tuple[str, str, str | None, dict[str, Any]]:
    session_id = message.get("session_id")
    text = message.get("text")
    intent = message.get("intent")
    slots = message.get("slots") or {}
    if not isinstance(session_id, str) or not session_id:
        raise DialogError("message needs a non-empty 'session_id'")
    if not isinstance(text, str):
        raise DialogError("message needs a 'text'")
    if intent is not None and not isinstance(intent, str):
        raise DialogError("'intent' must be a string")
    if not isinstance(slots, Mapping):
        raise DialogError("'slots' must be an object")
    return session_id, text, intent or None, dict(slots)
