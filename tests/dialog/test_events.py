from __future__ import annotations

import orjson
import pytest

from dialog.errors import MalformedEvent
from dialog.events import (
    EVENT_TYPES,
    BotReplied,
    SessionErased,
    SessionStarted,
    SlotFilled,
    ToolCalled,
    UserUtterance,
    decode,
    encode,
    key_of,
    to_dict,
)
from dialog.loadgen import conversation

COMMON = {"session_id": "s-1", "seq": 3, "event_id": "e-3", "ts_ms": 1_700_000_000_000, "origin": "east", "epoch": 2}


def test_every_type_round_trips_exactly() -> None:
    import random

    events = [e for i in range(40) for e in conversation(f"s{i}", random.Random(i))]
    events.append(SessionErased(**COMMON, reason="ticket 42"))  # the generator writes no erasure
    assert {e.TYPE for e in events} == set(EVENT_TYPES)  # every type is covered
    for event in events:
        again = decode(key_of(event), encode(event))
        assert again == event and type(again) is type(event)


def test_wire_format_is_versioned_and_flat() -> None:
    event = BotReplied(**COMMON, text="Your order ships today.", sources=("orders/A-1",), confirmed=("ships today",))
    data = orjson.loads(encode(event))
    assert data == {
        "type": "bot_replied",
        "v": 1,
        **COMMON,
        "text": "Your order ships today.",
        "sources": ["orders/A-1"],
        "confirmed": ["ships today"],
    }


def test_unknown_extra_fields_are_ignored_and_defaults_apply() -> None:
    raw = orjson.dumps({"type": "session_started", "v": 1, **COMMON, "future_field": 1})
    assert decode(b"s-1", raw) == SessionStarted(**COMMON)


def test_an_event_written_before_epochs_existed_has_epoch_zero() -> None:
    old = {k: v for k, v in COMMON.items() if k != "epoch"}
    event = decode(b"s-1", orjson.dumps({"type": "session_started", "v": 1, **old}))
    assert event.epoch == 0 and event == SessionStarted(**old)


def test_tool_error_and_any_json_result() -> None:
    event = ToolCalled(**COMMON, name="lookup", arguments={"id": [1, 2]}, result=None, error="Timeout")
    assert decode(None, encode(event)) == event
    event = SlotFilled(**COMMON, name="amount", value={"currency": "EUR", "cents": 1250})
    assert decode(None, encode(event)) == event


def _raw(**overrides: object) -> bytes:
    data: dict[str, object] = {"type": "user_utterance", "v": 1, **COMMON, "text": "hi"}
    for k, v in overrides.items():
        if v is _DROP:
            data.pop(k)
        else:
            data[k] = v
    return orjson.dumps(data)


_DROP = object()


@pytest.mark.parametrize(
    ("key", "value", "reason"),
    [
        (b"s-1", None, "tombstone"),
        (b"s-1", b"{not json", "not_json"),
        (b"s-1", b"[1, 2]", "not_an_object"),
        (b"s-1", _raw(type="telepathy"), "unknown_type"),
        (b"s-1", _raw(v="1"), "bad_version"),
        (b"s-1", _raw(v=2), "unsupported_version"),
        (b"s-1", _raw(text=_DROP), "missing_field"),
        (b"s-1", _raw(seq=_DROP), "missing_field"),
        (b"s-1", _raw(seq="3"), "bad_field"),
        (b"s-1", _raw(seq=True), "bad_field"),
        (b"s-1", _raw(seq=0), "bad_field"),
        (b"s-1", _raw(text=5), "bad_field"),
        (b"", _raw(session_id=""), "bad_field"),
        (b"s-1", _raw(event_id=""), "bad_field"),
        (b"s-1", _raw(epoch="2"), "bad_field"),
        (b"s-2", _raw(), "key_mismatch"),
    ],
)
def test_malformed_records_say_why(key: bytes, value: bytes | None, reason: str) -> None:
    with pytest.raises(MalformedEvent) as info:
        decode(key, value)
    assert info.value.reason == reason


def test_events_are_frozen() -> None:
    event = UserUtterance(**COMMON, text="hi")
    with pytest.raises(AttributeError):
        event.text = "changed"  # type: ignore[misc]
    assert to_dict(event)["type"] == "user_utterance"
