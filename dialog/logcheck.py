"""Is a region's stored position still on the log its sessions were folded from?

A broker that loses its data (the embedded one keeps topics in memory) brings the dialog log back
empty, at offset 0. A consumer fetching past the end of a Kafka partition is told "offset out of
range" (the worker handles that), but tansu answers such a fetch with nothing, and once new turns
have filled the new log past the stored position the worker would read on from there: every
event below it skipped as "already folded", acknowledged turns missing from the region for good.

So the worker checks, when it starts and every few seconds while idle, that the record just
before each stored position is an event its store folded: the same session, sequence number and
event id are in that session's state (``SessionState.recent``; the last event of a partition for a
session is that session's newest, so it is there). If the record is gone or another event, the
log is not the one folded: the position moves to the log's start and the new log is folded on top
of the sessions (duplicates and replays are no-ops for the reducer).
"""

from __future__ import annotations

from enum import StrEnum
from typing import Any

from confluent_kafka import KafkaException, TopicPartition

from dialog.errors import MalformedEvent
from dialog.events import decode
from dialog.kafka_io import consumer_config
from dialog.state import SessionState
from regionsync.kafka import new_consumer
from regionsync.settings import Settings


class Verdict(StrEnum):
    SAME_LOG = "same_log"
    RECREATED = "log_recreated"  # the record before the position is gone past the end, or another event
    EXPIRED = "events_expired"  # retention removed records this store never folded


def judge(
    position: int, low: int, record: tuple[bytes | None, bytes | None] | None, states: dict[str, SessionState],
    fenced: set[str] | frozenset[str] = frozenset(),
) -> Verdict:
    """``record``: (key, value) found at ``position - 1`` (None: nothing there); ``fenced``: event
    ids the store set aside (a promotion's cut: dialog/fence.py), which it read but did not fold. Pure."""
    if position <= 0:
        return Verdict.SAME_LOG
    if position - 1 < low:
        return Verdict.EXPIRED if position < low else Verdict.SAME_LOG
    if record is None:
        return Verdict.RECREATED
    try:
        event = decode(*record)
    except MalformedEvent:
        return Verdict.SAME_LOG  # dead-lettered when it was read: nothing to compare it with
    state = states.get(event.session_id)
    if state is not None and (event.seq, event.event_id) in state.recent:
        return Verdict.SAME_LOG
    if event.event_id in fenced:
        return Verdict.SAME_LOG
    return Verdict.RECREATED


class KafkaLogReader:
    """Reads single records of the region's logs by offset (assign only: it never joins a group)."""

    def __init__(self, settings: Settings, region: str, timeout_s: float = 2.0) -> None:
        self.timeout_s = timeout_s
        self._consumer = new_consumer({**consumer_config(settings, f"regionsync-dialog-check-{region}"),
                                   "auto.offset.reset": "error"})

    def watermarks(self, topic: str, partition: int) -> tuple[int, int] | None:
        try:
            low, high = self._consumer.get_watermark_offsets(
                TopicPartition(topic, partition), timeout=self.timeout_s, cached=False)
        except KafkaException:
            return None
        return int(low), int(high)

    def record_at(self, topic: str, partition: int, offset: int) -> tuple[bytes | None, bytes | None] | None:
        """The record at ``offset``, or None when the log has none there within the timeout."""
        self._consumer.assign([TopicPartition(topic, partition, offset)])
        try:
            for msg in self._consumer.consume(1, self.timeout_s):
                if msg.error() is None and msg.offset() == offset:
                    return msg.key(), msg.value()
            return None
        finally:
            self._consumer.unassign()

    def close(self) -> None:
        self._consumer.close()


LogReader = Any  # what the worker needs: watermarks(topic, partition), record_at(topic, partition, offset), close()
