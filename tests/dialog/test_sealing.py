"""Crypto-shredding (dialog/sealing.py, dialog/events.py): what a customer said is sealed with the
session's key; without the key the event still folds (identity and order are in clear), blank."""

from __future__ import annotations

import base64
import random
from typing import Any

import orjson
import pytest

from dialog import sealing
from dialog.errors import MalformedEvent
from dialog.events import (
    BotReplied,
    IntentDetected,
    SessionStarted,
    SlotFilled,
    ToolCalled,
    UserUtterance,
    decode,
    decode_opened,
    encode,
    key_of,
)
from dialog.loadgen import conversation

COMMON: dict[str, Any] = {"session_id": "s-1", "seq": 3, "event_id": "e-3", "ts_ms": 1_700_000_000_000,
                          "origin": "east", "epoch": 2}
SECRET_TEXT = "my card 4111 1111 1111 1111 was stolen"


def test_every_event_opens_exactly_with_its_sessions_key() -> None:
    keys: dict[tuple[str, str], bytes] = {}
    for i in range(30):
        for event in conversation(f"s{i}", random.Random(i)):
            key = keys.setdefault((event.session_id, "east"), sealing.new_key())
            again, whole = decode_opened(key_of(event), encode(event, ("east", key)),
                                         lambda sid, kid: keys.get((sid, kid)))
            assert whole and again == event and type(again) is type(event)


def test_the_record_holds_no_personal_field_in_clear() -> None:
    key = ("east", sealing.new_key())
    events = [
        UserUtterance(**COMMON, text=SECRET_TEXT),
        BotReplied(**COMMON, text=f"I blocked {SECRET_TEXT}", sources=("cards/block",), confirmed=(SECRET_TEXT,)),
        SlotFilled(**COMMON, name="card", value={"number": SECRET_TEXT}),
        ToolCalled(**COMMON, name="block_card", arguments={"card": SECRET_TEXT}, result={"ok": SECRET_TEXT},
                   error=SECRET_TEXT),
        SessionStarted(**COMMON, channel="web", customer_id=SECRET_TEXT),
    ]
    for event in events:
        raw = encode(event, key)
        assert b"4111" not in raw, raw
        data = orjson.loads(raw)
        # identity, order and labels stay readable: folding needs them
        assert {k: data[k] for k in COMMON} == COMMON and data["type"] == event.TYPE and sealing.SEALED in data
    assert orjson.loads(encode(events[1], key))["sources"] == ["cards/block"]
    assert orjson.loads(encode(events[2], key))["name"] == "card"


def test_an_event_with_nothing_personal_is_not_sealed() -> None:
    event = IntentDetected(**COMMON, intent="block_card", confidence=0.9)
    assert encode(event, ("east", sealing.new_key())) == encode(event)


def test_without_the_key_the_event_folds_blank() -> None:
    raw = encode(UserUtterance(**COMMON, text=SECRET_TEXT), ("east", sealing.new_key()))
    for keys in (None, lambda _s, _k: None):
        event, whole = decode_opened(b"s-1", raw, keys)
        assert not whole and event == UserUtterance(**COMMON, text="")
    tool = encode(ToolCalled(**COMMON, name="t", arguments={"a": 1}, result=2, error="e"), ("east", sealing.new_key()))
    assert decode(None, tool) == ToolCalled(**COMMON, name="t", arguments={}, result=None, error=None)


def test_a_wrong_key_or_a_tampered_payload_is_malformed_not_blank() -> None:
    key = ("east", sealing.new_key())
    raw = encode(UserUtterance(**COMMON, text=SECRET_TEXT), key)
    with pytest.raises(MalformedEvent) as wrong:
        decode(b"s-1", raw, lambda _sid, _kid: sealing.new_key())
    assert wrong.value.reason == "sealed_payload"
    data = orjson.loads(raw)
    box = bytearray(base64.urlsafe_b64decode(data[sealing.SEALED]))
    box[-1] ^= 1
    data[sealing.SEALED] = base64.urlsafe_b64encode(bytes(box)).decode()
    with pytest.raises(MalformedEvent, match="sealed_payload"):
        decode(b"s-1", orjson.dumps(data), lambda _sid, _kid: key[1])
    data = orjson.loads(raw)
    data[sealing.SEALED] = 42
    with pytest.raises(MalformedEvent, match="sealed_payload"):
        decode(b"s-1", orjson.dumps(data), lambda _sid, _kid: key[1])


def test_a_sealed_payload_does_not_open_in_another_event() -> None:
    key = ("east", sealing.new_key())
    first = orjson.loads(encode(UserUtterance(**COMMON, text=SECRET_TEXT), key))
    other = orjson.loads(encode(UserUtterance(**{**COMMON, "event_id": "e-4", "seq": 4}, text="hello"), key))
    other[sealing.SEALED] = first[sealing.SEALED]  # same session, same key: only the event id differs
    with pytest.raises(MalformedEvent, match="sealed_payload"):
        decode(b"s-1", orjson.dumps(other), lambda _sid, _kid: key[1])


def test_two_sealings_of_one_event_differ_but_open_the_same() -> None:
    key = ("east", sealing.new_key())
    event = UserUtterance(**COMMON, text=SECRET_TEXT)
    a, b = encode(event, key), encode(event, key)
    assert a != b  # a fresh nonce each time
    assert orjson.loads(a)[sealing.KID] == "east"
    assert decode(b"s-1", a, lambda _s, _k: key[1]) == decode(b"s-1", b, lambda _s, _k: key[1]) == event


def test_a_payload_does_not_open_under_another_key_id() -> None:
    """After a split brain a session can have two keys; each event names its own, and a payload
    relabelled with the other key's id does not open even if that key were the same bytes."""
    key = sealing.new_key()
    data = orjson.loads(encode(UserUtterance(**COMMON, text=SECRET_TEXT), ("east", key)))
    data[sealing.KID] = "north"
    with pytest.raises(MalformedEvent, match="sealed_payload"):
        decode(b"s-1", orjson.dumps(data), lambda _sid, _kid: key)
    assert decode_opened(b"s-1", orjson.dumps(data), lambda _sid, kid: key if kid == "east" else None)[1] is False
