"""A dead letter of a huge record still fits the dead-letter topic (the storm's 10 MB document
stalled the whole pipeline: its dead letter was itself too large, and the batch was retried
forever); a normal one keeps every original byte."""

from __future__ import annotations

import hashlib

import orjson

from streams.deadletter import MAX_KEPT_BYTES, PREFIX_BYTES, DeadLetter


def letter(value: bytes | None, key: bytes | None = b"k") -> DeadLetter:
    return DeadLetter("changes", "document_too_large", "too big", "t", 1, 7, key, value, 1)


def test_a_normal_dead_letter_keeps_the_original_bytes() -> None:
    raw = b"\xff{not json" * 10
    back = DeadLetter.from_bytes(letter(raw).to_bytes())
    assert back == letter(raw)
    assert "value_truncated" not in orjson.loads(letter(raw).to_bytes())
    assert DeadLetter.from_bytes(letter(None, None).to_bytes()).value is None


def test_a_huge_original_is_kept_in_part_with_its_size_and_hash() -> None:
    raw = b"z" * (10 * 1024 * 1024)
    encoded = letter(raw).to_bytes()
    assert len(encoded) < 1_000_000  # fits a topic's default message size
    data = orjson.loads(encoded)
    assert data["value_truncated"] == {"bytes": len(raw), "kept_bytes": PREFIX_BYTES,
                                       "sha256": hashlib.sha256(raw).hexdigest()}
    back = DeadLetter.from_bytes(encoded)
    assert back.value == raw[:PREFIX_BYTES] and (back.topic, back.partition, back.offset) == ("t", 1, 7)
    assert "key_truncated" not in data
    exactly = b"y" * MAX_KEPT_BYTES
    assert DeadLetter.from_bytes(letter(exactly).to_bytes()).value == exactly
