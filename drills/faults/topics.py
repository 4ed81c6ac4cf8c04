"""Reading a topic back to count what a fault did to it: the redelivered events."""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass

import orjson

from drills.kafka_io import watermarks
from drills.verify import READ_TIMEOUT_S
from regionsync.kafka import read_topic
from regionsync.settings import Settings


@dataclass(frozen=True)
class TopicMark:
    """Where a topic ended at a moment (per partition)."""

    topic: str
    ends: dict[int, int]

    @classmethod
    def now(cls, settings: Settings, topic: str) -> TopicMark:
        return cls(topic, {p: end for p, (_low, end) in watermarks(settings.kafka(), topic, probe=True).items()})


def change_identity(key: bytes | None, value: bytes | None) -> tuple[bytes, int, str] | None:
    """A Debezium change event's identity: (key, WAL position, op). None for a tombstone or
    anything that is not a change event (a tombstone repeats legitimately: delete, insert, delete)."""
    if key is None or value is None:
        return None
    try:
        env = orjson.loads(value)
    except orjson.JSONDecodeError:
        return None
    if isinstance(env, dict) and "payload" in env and "schema" in env:
        env = env["payload"]
    if not isinstance(env, dict) or not isinstance(env.get("source"), dict):
        return None
    lsn = env["source"].get("lsn")
    op = env.get("op")
    if not isinstance(lsn, int) or not isinstance(op, str) or op == "r":
        return None  # a snapshot read is not a redelivery: a new snapshot reads the rows again
    return key, lsn, op


def duplicate_events(settings: Settings, mark: TopicMark) -> int:
    """Change events at or after ``mark`` that are copies of an event seen before them (the same
    key, WAL position and op): what a producer's restart redelivered."""
    seen: Counter[tuple[bytes, int, str]] = Counter()
    dupes = 0
    for msg in read_topic(settings, mark.topic, timeout=READ_TIMEOUT_S):
        ident = change_identity(msg.key(), msg.value())
        if ident is None:
            continue
        if seen[ident] and (msg.offset() or 0) >= mark.ends.get(msg.partition() or 0, 0):
            dupes += 1
        seen[ident] += 1
    return dupes
