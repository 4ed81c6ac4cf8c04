"""What a handler sees of one conversation during one turn.

A :class:`Session` wraps the session's state and records every change a handler makes (slot
filled, tool called, handoff) as an event, folded at once through the same reducer the worker
uses: a handler reads its own writes, and the state it sees is exactly the state every region
will rebuild from the log. Handlers get everything through it (and their own constructor
arguments, e.g. a tool client): never through module globals.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

from dialog import reducer
from dialog.errors import DialogError
from dialog.events import (
    DialogEvent,
    HandoffRequested,
    SlotCleared,
    SlotFilled,
    ToolCalled,
)
from dialog.state import SessionState, ToolCall, Turn

# Builds the next event of this session: (event class, payload) -> event with seq/ids/time filled in.
EventFactory = Callable[[type[DialogEvent], SessionState, dict[str, Any]], DialogEvent]


class Session:
    def __init__(self, state: SessionState, text: str, make_event: EventFactory) -> None:
        self._state = state
        self._text = text
        self._make_event = make_event
        self.pending: list[DialogEvent] = []

    # ------------------------------------------------------------------ reading
    @property
    def state(self) -> SessionState:
        return self._state

    @property
    def session_id(self) -> str:
        return self._state.session_id

    @property
    def text(self) -> str:
        """The customer's message of this turn."""
        return self._text

    @property
    def intent(self) -> str | None:
        return self._state.intent

    @property
    def slots(self) -> Mapping[str, Any]:
        return self._state.slots

    def slot(self, name: str, default: Any = None) -> Any:
        return self._state.slots.get(name, default)

    @property
    def history(self) -> tuple[Turn, ...]:
        return self._state.turns

    def successful_call(self, name: str, arguments: Mapping[str, Any]) -> ToolCall | None:
        """The last successful call of tool ``name`` with these arguments, if any: lets a handler
        keep a side effect (blocking a card) from happening twice across turns or regions."""
        for call in reversed(self._state.tool_calls):
            if call.name == name and call.ok and call.arguments == dict(arguments):
                return call
        return None

    # ------------------------------------------------------------------ recording
    def record(self, cls: type[DialogEvent], **payload: Any) -> DialogEvent:
        event = self._make_event(cls, self._state, payload)
        result = reducer.step(self._state, event)
        if result.outcome not in (reducer.Outcome.APPLIED,):
            raise DialogError(f"event {event.seq} of session {event.session_id} not applied: {result.outcome.value}")
        self._state = result.state
        self.pending.append(event)
        return event

    def fill_slot(self, name: str, value: Any) -> None:
        if self._state.slots.get(name, _ABSENT) != value:
            self.record(SlotFilled, name=name, value=value)

    def clear_slot(self, name: str) -> None:
        if name in self._state.slots:
            self.record(SlotCleared, name=name)

    def call_tool(self, name: str, fn: Callable[..., Any], arguments: Mapping[str, Any]) -> ToolCall:
        """Run a tool and record its result or error. The tool's own exceptions become the
        recorded error (the conversation goes on); the result must be JSON-serialisable."""
        args = dict(arguments)
        try:
            result, error = fn(**args), None
        except Exception as exc:  # noqa: BLE001 - a failing tool is part of the conversation
            result, error = None, f"{type(exc).__name__}: {exc}"
        self.record(ToolCalled, name=name, arguments=args, result=result, error=error)
        return self._state.tool_calls[-1]

    def handoff(self, reason: str, queue: str = "") -> None:
        self.record(HandoffRequested, reason=reason, queue=queue)


_ABSENT = object()
