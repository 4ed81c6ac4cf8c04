"""The state of one session, as folded from its events by :mod:`dialog.reducer`.

Immutable by convention all the way down: the reducer never mutates a state (``slots`` is a
plain dict for handlers' convenience, but it is copied, never updated in place). A state knows
how to turn itself into plain JSON and back, exactly: the state store and the snapshots use that,
and ``from_dict(to_dict(s)) == s`` is a tested property.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import orjson

# Status of a session: "new" (no session_started seen), "open", "handoff" (waiting for a human),
# "closed", "erased" (a tombstone: the customer asked to be forgotten; nothing else is kept).
NEW, OPEN, HANDOFF, CLOSED, ERASED = "new", "open", "handoff", "closed", "erased"

# How many (seq, event_id) pairs a state remembers: enough to tell a redelivered event from a
# different event that reused a sequence number (two writers on one session).
RECENT = 32


@dataclass(frozen=True)
class Turn:
    seq: int
    role: str  # "user" | "bot"
    text: str
    ts_ms: int
    sources: tuple[str, ...] = ()


@dataclass(frozen=True)
class ToolCall:
    seq: int
    name: str
    arguments: dict[str, Any]
    result: Any = None
    error: str | None = None

    @property
    def ok(self) -> bool:
        return self.error is None


@dataclass(frozen=True)
class SessionState:
    session_id: str
    status: str = NEW
    last_seq: int = 0
    applied: int = 0  # events folded into this state; duplicates are not counted
    intent: str | None = None
    slots: dict[str, Any] = field(default_factory=dict)
    turns: tuple[Turn, ...] = ()
    tool_calls: tuple[ToolCall, ...] = ()
    confirmed: tuple[str, ...] = ()  # every fact a bot reply confirmed to the customer, in order
    handoff_reason: str | None = None
    channel: str = ""
    customer_id: str = ""
    locale: str = ""
    started_ms: int = 0
    updated_ms: int = 0
    origin: str = ""  # region of the last applied event
    gaps: tuple[tuple[int, int], ...] = ()  # missing sequence ranges (first, last), in order
    recent: tuple[tuple[int, str], ...] = ()  # (seq, event_id) of the last RECENT applied events

    # ------------------------------------------------------------------ reading helpers
    def slot(self, name: str, default: Any = None) -> Any:
        return self.slots.get(name, default)

    def last_user_text(self) -> str:
        for turn in reversed(self.turns):
            if turn.role == "user":
                return turn.text
        return ""

    # ------------------------------------------------------------------ plain JSON
    def to_json(self) -> bytes:
        """``orjson.dumps(self.to_dict())``, done by orjson's native dataclass support (several
        times faster; the field order of these classes is the key order of :meth:`to_dict`)."""
        return orjson.dumps(self)

    def to_dict(self) -> dict[str, Any]:
        return {
            "session_id": self.session_id,
            "status": self.status,
            "last_seq": self.last_seq,
            "applied": self.applied,
            "intent": self.intent,
            "slots": self.slots,
            "turns": [
                {"seq": t.seq, "role": t.role, "text": t.text, "ts_ms": t.ts_ms, "sources": list(t.sources)}
                for t in self.turns
            ],
            "tool_calls": [
                {"seq": c.seq, "name": c.name, "arguments": c.arguments, "result": c.result, "error": c.error}
                for c in self.tool_calls
            ],
            "confirmed": list(self.confirmed),
            "handoff_reason": self.handoff_reason,
            "channel": self.channel,
            "customer_id": self.customer_id,
            "locale": self.locale,
            "started_ms": self.started_ms,
            "updated_ms": self.updated_ms,
            "origin": self.origin,
            "gaps": [list(g) for g in self.gaps],
            "recent": [list(r) for r in self.recent],
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> SessionState:
        """Inverse of :meth:`to_dict`; raises ``KeyError``/``TypeError``/``ValueError`` on bad input."""
        return cls(
            session_id=str(data["session_id"]),
            status=str(data["status"]),
            last_seq=int(data["last_seq"]),
            applied=int(data["applied"]),
            intent=data["intent"],
            slots=dict(data["slots"]),
            turns=tuple(
                Turn(int(t["seq"]), str(t["role"]), str(t["text"]), int(t["ts_ms"]), tuple(t["sources"]))
                for t in data["turns"]
            ),
            tool_calls=tuple(
                ToolCall(int(c["seq"]), str(c["name"]), dict(c["arguments"]), c["result"], c["error"])
                for c in data["tool_calls"]
            ),
            confirmed=tuple(data["confirmed"]),
            handoff_reason=data["handoff_reason"],
            channel=str(data["channel"]),
            customer_id=str(data["customer_id"]),
            locale=str(data["locale"]),
            started_ms=int(data["started_ms"]),
            updated_ms=int(data["updated_ms"]),
            origin=str(data["origin"]),
            gaps=tuple((int(a), int(b)) for a, b in data["gaps"]),
            recent=tuple((int(s), str(e)) for s, e in data["recent"]),
        )
