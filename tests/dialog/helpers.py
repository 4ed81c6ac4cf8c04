"""Shared by the integration tests: publish events, read the logs back, fold them.

Positions are per (topic, partition), as a region's store keeps them (its own dialog topic and
its copies of the other regions')."""

from __future__ import annotations

import itertools
import random
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from confluent_kafka import Producer

from dialog.errors import MalformedEvent
from dialog.events import DialogEvent, decode
from dialog.kafka_io import Ack, KafkaPublisher, ensure_topic, producer_config, read_topic, where
from dialog.loadgen import conversation, interleave
from dialog.reducer import fold
from dialog.state import SessionState
from dialog.store import TP
from regionsync.settings import Settings


def make_log(sessions: int, seed: int = 1, prefix: str = "s", turns: int | None = None) -> list[DialogEvent]:
    rng = random.Random(seed)
    return interleave([conversation(f"{prefix}{i:05d}", rng, turns=turns) for i in range(sessions)], rng)


def publish(settings: Settings, events: Sequence[DialogEvent]) -> list[Ack]:
    ensure_topic(settings, settings.dialog_topic)
    publisher = KafkaPublisher(settings, config={"linger.ms": 5})
    try:
        return publisher.publish(events)
    finally:
        publisher.close()


def produce_raw(settings: Settings, topic: str, records: Iterable[tuple[bytes | None, bytes | None]]) -> dict[int, int]:
    """Produce raw records (acks=all); returns partition -> offset after the last acknowledged one."""
    producer = Producer(producer_config(settings))
    ends: dict[int, int] = {}
    errors: list[object] = []

    def delivered(err: object, msg: object) -> None:
        if err is not None:
            errors.append(err)
        else:
            p, o = where(msg)  # type: ignore[arg-type]
            ends[p] = max(ends.get(p, 0), o + 1)

    for key, value in records:
        producer.produce(topic, key=key, value=value, on_delivery=delivered)
    assert producer.flush(30) == 0 and not errors
    return ends


def ends_of(acks: Iterable[Ack], topic: str, into: Mapping[TP, int] | None = None) -> dict[TP, int]:
    """(topic, partition) -> one past the last acknowledged offset: where a worker that folded
    ``topic`` (on the broker the acks came from) up to them stands."""
    out = dict(into or {})
    for ack in acks:
        tp = (topic, ack.partition)
        out[tp] = max(out.get(tp, 0), ack.offset + 1)
    return out


def read_log(settings: Settings, ends: Mapping[TP, int], timeout: float = 300.0) -> list[DialogEvent]:
    """Every event of the topics in ``ends`` (on ``settings``' broker) below those ends, topic by
    topic in the order given, each in partition order (malformed records left out). A generous
    timeout: tansu's S3 engine keeps every produced batch as an object, so a log written turn by
    turn is read back at a few hundred records a second (tens on a loaded machine)."""
    events: list[DialogEvent] = []
    by_topic: dict[str, dict[int, int]] = {}
    for (topic, p), end in ends.items():
        by_topic.setdefault(topic, {})[p] = end
    for topic, parts in by_topic.items():
        for msg in read_topic(settings, topic, parts, timeout):
            try:
                events.append(decode(msg.key(), msg.value()))
            except MalformedEvent:
                pass
    return events


def fold_log(settings: Settings, ends: Mapping[TP, int]) -> tuple[dict[str, SessionState], list[DialogEvent]]:
    """Read the topics up to ``ends`` and fold them directly: the reference every store must equal."""
    events = read_log(settings, ends)
    return fold(events), events


ORDERS = {"A-1": {"status": "shipped", "eta": "2026-12-01"}, "B-2": {"status": "packed"}}


class Tools:
    """Fake back-office tools; counts calls so tests can prove a side effect happened once."""

    def __init__(self) -> None:
        self.blocked: list[str] = []
        self.refs = itertools.count(100)

    def lookup(self, order_id: str) -> dict[str, Any]:
        if order_id not in ORDERS:
            raise KeyError(order_id)
        return ORDERS[order_id]

    def block(self, card_last4: str) -> dict[str, Any]:
        self.blocked.append(card_last4)
        return {"reference": f"BLK-{next(self.refs)}"}
