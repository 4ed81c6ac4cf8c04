"""Session events: the only record of a conversation.

Every event is a frozen dataclass carrying its identity and order (``session_id``, per-session
``seq`` starting at 1, a globally unique ``event_id``), when it happened (``ts_ms``), the region
that wrote it (``origin``) and that region's epoch when it wrote it (``epoch``: the fencing token
of :mod:`dialog.fence`; 0 in events written before epochs existed). Each region's dialog topic
carries the events its service wrote, keyed by session id, so a session's events sit in one
partition in the order they were written; the other regions hold a copy (mirror/).

Wire format: one orjson object per record, ``{"type": ..., "v": ..., <common fields>, <payload>}``.
The personal part of the payload is sealed with the session's key (:mod:`dialog.sealing`): a
reader with the key gets the event back whole, one without it (the session was erased) gets the
event with those fields blank.
``v`` is the version of that type's payload. A reader accepts every version it knows (today all
types are at version 1; a version 2 would come with an upcaster from 1) and rejects newer ones as
malformed rather than guessing. Unknown extra fields are ignored, so adding an optional field does
not need a new version.
"""

from __future__ import annotations

import types
import typing
import uuid
from collections.abc import Callable
from dataclasses import MISSING, dataclass, fields
from typing import Any, ClassVar, Union

import orjson

from dialog import sealing
from dialog.errors import MalformedEvent

JsonValue = Any  # anything orjson round-trips: None, bool, int, float, str, list, dict


@dataclass(frozen=True, kw_only=True)
class DialogEvent:
    TYPE: ClassVar[str] = ""
    VERSION: ClassVar[int] = 1

    session_id: str
    seq: int
    event_id: str
    ts_ms: int
    origin: str
    epoch: int = 0


@dataclass(frozen=True, kw_only=True)
class SessionStarted(DialogEvent):
    TYPE: ClassVar[str] = "session_started"
    channel: str = ""
    customer_id: str = ""
    locale: str = ""


@dataclass(frozen=True, kw_only=True)
class UserUtterance(DialogEvent):
    TYPE: ClassVar[str] = "user_utterance"
    text: str


@dataclass(frozen=True, kw_only=True)
class IntentDetected(DialogEvent):
    TYPE: ClassVar[str] = "intent_detected"
    intent: str
    confidence: float = 1.0


@dataclass(frozen=True, kw_only=True)
class SlotFilled(DialogEvent):
    TYPE: ClassVar[str] = "slot_filled"
    name: str
    value: JsonValue


@dataclass(frozen=True, kw_only=True)
class SlotCleared(DialogEvent):
    TYPE: ClassVar[str] = "slot_cleared"
    name: str


@dataclass(frozen=True, kw_only=True)
class ToolCalled(DialogEvent):
    """A tool ran: its result (or error) is recorded, so a replay never calls the tool again."""

    TYPE: ClassVar[str] = "tool_called"
    name: str
    arguments: dict[str, JsonValue]
    result: JsonValue = None
    error: str | None = None


@dataclass(frozen=True, kw_only=True)
class BotReplied(DialogEvent):
    """What the customer was told. ``confirmed`` lists the facts the reply confirmed to them."""

    TYPE: ClassVar[str] = "bot_replied"
    text: str
    sources: tuple[str, ...] = ()
    confirmed: tuple[str, ...] = ()


@dataclass(frozen=True, kw_only=True)
class HandoffRequested(DialogEvent):
    TYPE: ClassVar[str] = "handoff_requested"
    reason: str
    queue: str = ""


@dataclass(frozen=True, kw_only=True)
class SessionClosed(DialogEvent):
    TYPE: ClassVar[str] = "session_closed"
    reason: str = ""


@dataclass(frozen=True, kw_only=True)
class SessionErased(DialogEvent):
    """The customer asked to be forgotten. Every region deletes the session's key (so the sealed
    payloads left in the log stay unreadable), its state and the snapshots holding it; the reducer
    turns the session into a tombstone that no later event changes. ``reason`` is in clear text:
    a ticket reference, never anything the customer said."""

    TYPE: ClassVar[str] = "session_erased"
    reason: str = ""


EVENT_TYPES: dict[str, type[DialogEvent]] = {
    cls.TYPE: cls
    for cls in (
        SessionStarted,
        UserUtterance,
        IntentDetected,
        SlotFilled,
        SlotCleared,
        ToolCalled,
        BotReplied,
        HandoffRequested,
        SessionClosed,
        SessionErased,
    )
}

# Looks up one of a session's keys by (session id, key id): None when this region does not hold
# it (the session was erased, or the key never reached this region). dialog/sealing.py.
KeyLookup = Callable[[str, str], bytes | None]
SealingKey = tuple[str, bytes]  # (key id, key)


def new_event_id() -> str:
    return str(uuid.uuid4())


# ---------------------------------------------------------------------------- encoding


_FIELD_NAMES = {cls: tuple(f.name for f in fields(cls)) for cls in EVENT_TYPES.values()}


def to_dict(event: DialogEvent) -> dict[str, Any]:
    out: dict[str, Any] = {"type": event.TYPE, "v": event.VERSION}
    for name in _FIELD_NAMES[type(event)]:
        out[name] = getattr(event, name)
    return out


def encode(event: DialogEvent, key: SealingKey | None = None) -> bytes:
    """The record's value; with ``key`` (one of the session's) its personal fields are sealed."""
    data = to_dict(event)
    return orjson.dumps(data if key is None else sealing.seal(data, key[1], key[0]))


def key_of(event: DialogEvent) -> bytes:
    """The record key: the session id, so every event of a session lands in the same partition."""
    return event.session_id.encode("utf-8")


# ---------------------------------------------------------------------------- decoding


_Checker = Callable[[Any], Any]  # returns the value in the field's type, or raises _Mismatch


class _Mismatch(Exception):
    pass


def _checker(tp: Any) -> _Checker:
    """Compile a field annotation into a checker once, so decoding does no typing introspection."""
    if tp is Any:
        return lambda v: v
    origin = typing.get_origin(tp)
    if origin in (Union, types.UnionType):
        (inner,) = [a for a in typing.get_args(tp) if a is not type(None)]
        check_inner = _checker(inner)
        return lambda v: None if v is None else check_inner(v)
    if tp is str:
        return lambda v: v if isinstance(v, str) else _fail()
    if tp is int:
        return lambda v: v if isinstance(v, int) and not isinstance(v, bool) else _fail()
    if tp is float:
        return lambda v: float(v) if isinstance(v, (int, float)) and not isinstance(v, bool) else _fail()
    if origin is tuple:
        return lambda v: tuple(v) if isinstance(v, list) and all(isinstance(x, str) for x in v) else _fail()
    if origin is dict:
        return lambda v: v if isinstance(v, dict) else _fail()
    raise TypeError(f"no checker for {tp}")


def _fail() -> Any:
    raise _Mismatch


def _field_specs(cls: type[DialogEvent]) -> tuple[tuple[str, Any, _Checker, bool], ...]:
    """(name, type, checker, required) of each field, resolved once per class at import."""
    hints = typing.get_type_hints(cls)
    return tuple(
        (f.name, hints[f.name], _checker(hints[f.name]), f.default is MISSING and f.default_factory is MISSING)
        for f in fields(cls)
    )


_FIELD_SPECS = {cls: _field_specs(cls) for cls in EVENT_TYPES.values()}


def from_dict(data: Any) -> DialogEvent:
    """Build an event from a decoded JSON object; raises :class:`MalformedEvent`."""
    if not isinstance(data, dict):
        raise MalformedEvent("not_an_object", f"got {type(data).__name__}")
    etype = data.get("type")
    cls = EVENT_TYPES.get(etype) if isinstance(etype, str) else None
    if cls is None:
        raise MalformedEvent("unknown_type", repr(etype)[:100])
    version = data.get("v")
    if not isinstance(version, int) or isinstance(version, bool) or version < 1:
        raise MalformedEvent("bad_version", repr(version)[:100])
    if version > cls.VERSION:
        raise MalformedEvent("unsupported_version", f"{etype} v{version}; this reader knows v{cls.VERSION}")
    kwargs: dict[str, Any] = {}
    for name, tp, check, required in _FIELD_SPECS[cls]:
        if name not in data:
            if required:
                raise MalformedEvent("missing_field", f"{etype}.{name}")
            continue
        try:
            kwargs[name] = check(data[name])
        except _Mismatch:
            raise MalformedEvent("bad_field", f"{etype}.{name}: expected {tp}, got {type(data[name]).__name__}") from None
    if not kwargs["session_id"]:
        raise MalformedEvent("bad_field", "session_id is empty")
    if kwargs["seq"] < 1:
        raise MalformedEvent("bad_field", f"seq must be >= 1, got {kwargs['seq']}")
    if not kwargs["event_id"]:
        raise MalformedEvent("bad_field", "event_id is empty")
    return cls(**kwargs)


def decode(key: bytes | None, value: bytes | None, keys: KeyLookup | None = None) -> DialogEvent:
    """Decode one record of the session-event topic; raises :class:`MalformedEvent` with a reason.
    A sealed payload is opened with ``keys``; without them, or without the session's key, its
    personal fields are blank (:func:`decode_opened` says which)."""
    return decode_opened(key, value, keys)[0]


def decode_opened(key: bytes | None, value: bytes | None, keys: KeyLookup | None = None) -> tuple[DialogEvent, bool]:
    """:func:`decode`, and whether the event is whole: False when its sealed payload could not be
    opened for want of the session's key (its personal fields are then blank)."""
    if value is None:
        raise MalformedEvent("tombstone", "a record with no value on the session-event topic")
    try:
        data = orjson.loads(value)
    except orjson.JSONDecodeError as exc:
        raise MalformedEvent("not_json", str(exc)[:200]) from None
    whole = True
    if isinstance(data, dict) and sealing.is_sealed(data):
        data, whole = _opened(data, keys)
    event = from_dict(data)
    if key is not None and key != key_of(event):
        # A record keyed by something else may sit in another partition than the rest of its
        # session, so its order relative to them is unknown: applying it could reorder history.
        raise MalformedEvent("key_mismatch", f"key {key[:64]!r} != session_id {event.session_id[:64]!r}")
    return event, whole


def _opened(data: dict[str, Any], keys: KeyLookup | None) -> tuple[dict[str, Any], bool]:
    session_id, kid = data.get("session_id"), data.get(sealing.KID)
    secret = keys(session_id, kid) if keys is not None and isinstance(session_id, str) and isinstance(kid, str) \
        else None
    if secret is None:
        return sealing.shred(data), False
    try:
        return sealing.open_sealed(data, secret), True
    except sealing.SealError as exc:
        raise MalformedEvent("sealed_payload", str(exc)[:200]) from None
