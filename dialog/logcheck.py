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

import logging
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from enum import StrEnum
from typing import Protocol

from confluent_kafka import KafkaException, TopicPartition

from dialog import metrics
from dialog.errors import MalformedEvent
from dialog.events import decode
from dialog.kafka_io import consumer_config
from dialog.logs import RegionLogs
from dialog.state import SessionState
from dialog.store import TP
from regionsync.kafka import FetchCounter, NoAnswer, new_consumer, probe_offset
from regionsync.settings import Settings

log = logging.getLogger(__name__)


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


class RecordReader(Protocol):
    def watermarks(self, topic: str, partition: int) -> tuple[int, int] | None: ...

    def record_at(self, topic: str, partition: int, offset: int) -> tuple[bytes | None, bytes | None] | None: ...


@dataclass(frozen=True)
class Moved:
    """A stored position that is not on the log it was folded from, and the log's offsets now."""

    tp: tuple[str, int]
    stored: int
    low: int
    high: int
    verdict: Verdict


def find_moved(reader: RecordReader, partitions: Iterable[tuple[str, int]], positions: Mapping[tuple[str, int], int],
               states: dict[str, SessionState], fenced_ids: Callable[[], set[str]]) -> list[Moved]:
    """The dialog partitions whose stored position is not on the log (see :func:`judge`).
    ``fenced_ids`` is called once, and only when a record needs judging."""
    moved = []
    fenced: set[str] | None = None
    for tp in partitions:
        topic, p = tp
        stored = positions.get(tp, 0)
        marks = reader.watermarks(topic, p) if stored > 0 else None
        if marks is None:
            continue  # nothing folded yet, or the broker does not answer: later
        low, high = marks
        try:
            record = reader.record_at(topic, p, stored - 1) if stored - 1 >= low else None
        except NoAnswer:
            continue  # the broker is slow: judged later, never "recreated" for want of an answer
        if fenced is None:
            fenced = fenced_ids()
        verdict = judge(stored, low, record, states, fenced)
        if verdict is not Verdict.SAME_LOG:
            moved.append(Moved(tp, stored, low, high, verdict))
    return moved


HOLE_WAIT_S = 2.0  # a log stuck this long below its end is probed for a record there


class HoleProbe:
    """Is a log whose fetch stopped below its end really at its end?

    tansu killed in the middle of a write can come back with a log's end past its last record (an
    offset that never got its record: seen after a whole region was killed). No record will arrive
    below that end, and the worker's merge of that partition number would wait for one until the
    log is written again (a standby never writes its own log). So a log stuck below its end for
    ``wait_s`` is probed at its position; nothing there is a hole, and the log counts as at its
    end until its end or its position moves. A record found there is left to the fetch."""

    def __init__(self, reader: RecordReader | None, clock: Callable[[], float], wait_s: float = HOLE_WAIT_S) -> None:
        self._reader = reader
        self._clock = clock
        self._wait_s = wait_s
        self._stalled: dict[tuple[str, int], tuple[tuple[int, int], float, bool]] = {}

    def hole(self, tp: tuple[str, int], at: int, high: int) -> bool:
        """``tp`` is fetched to ``at`` and its end is ``high`` (> at): nothing in between?"""
        now = self._clock()
        key, since, hole = self._stalled.get(tp, ((at, high), now, False))
        if key != (at, high):
            key, since, hole = (at, high), now, False
        if not hole and self._reader is not None and now - since >= self._wait_s:
            try:
                hole = self._reader.record_at(tp[0], tp[1], at) is None
            except NoAnswer:
                hole = False  # a slow broker: asked again after another wait
            if hole:
                log.warning("dialog log %s[%d]: no record between offset %d and its end %d (a write the broker "
                            "lost when it was killed): at its end", tp[0], tp[1], at, high)
            else:
                since = now
        self._stalled[tp] = (key, since, hole)
        return hole

    def known(self, tp: tuple[str, int], position: int, high: int) -> bool:
        """A hole was found in ``tp`` up to ``high``, at or after ``position``."""
        state = self._stalled.get(tp)
        return state is not None and state[2] and state[0][1] == high and state[0][0] >= position

    def clear(self, tp: tuple[str, int]) -> None:
        self._stalled.pop(tp, None)


class KafkaLogReader:
    """Reads single records of the region's logs by offset (assign only: it never joins a group)."""

    def __init__(self, settings: Settings, region: str, timeout_s: float = 10.0) -> None:
        self.timeout_s = timeout_s
        self._fetches = FetchCounter()
        self._consumer = new_consumer({**consumer_config(settings, f"regionsync-dialog-check-{region}"),
                                       "auto.offset.reset": "error", **self._fetches.config()})

    def watermarks(self, topic: str, partition: int) -> tuple[int, int] | None:
        try:
            low, high = self._consumer.get_watermark_offsets(
                TopicPartition(topic, partition), timeout=self.timeout_s, cached=False)
        except KafkaException:
            return None
        return int(low), int(high)

    def record_at(self, topic: str, partition: int, offset: int) -> tuple[bytes | None, bytes | None] | None:
        """The record at ``offset``, or None when the broker answers that it has none there.
        Raises :class:`~regionsync.kafka.NoAnswer` when the broker does not answer in time (a
        slow broker is not an empty log)."""
        msg = probe_offset(self._consumer, self._fetches, topic, partition, offset, timeout_s=self.timeout_s)
        return None if msg is None else (msg.key(), msg.value())

    def close(self) -> None:
        self._consumer.close()


class LogReader(RecordReader, Protocol):
    """What the worker needs to check its positions: a :class:`RecordReader` it can close."""

    def close(self) -> None: ...


def report_moved(region: str, tp: tuple[str, int], stored: int, low: int, high: int, verdict: Verdict) -> None:
    """Say why a stored position moves to the log's start. Past the log's end, or another event
    there: the log was recreated (a broker that lost its data) and starts again at low offsets; its
    new events continue the sessions (their sequence numbers go on) and must all be folded; the
    sessions folded so far stay. Below the log's start: retention removed events this store never
    folded; they are lost to it, and it says so."""
    topic, partition = tp
    if verdict is Verdict.RECREATED:
        log.error(
            "dialog log %s[%d] (offsets %d..%d) is not the log this store folded to %d: the log lost its "
            "history (recreated by a broker that lost its data); folding the new log from offset %d, "
            "sessions kept", topic, partition, low, high, stored, low,
        )
    else:
        log.error(
            "dialog log %s[%d] starts at %d but this store had folded it only to %d: %d events were removed "
            "before they were folded (retention) and are missing from this region's sessions",
            topic, partition, low, stored, low - stored,
        )
    metrics.LOG_RESETS.labels(region, verdict.value).inc()


def restart_moved(logs: RegionLogs, region: str, tp: TP, positions: dict[TP, int]) -> int:
    """The consumer says the stored position of ``tp`` is not on the log any more (a broker that
    checks: Kafka's "offset out of range"): reported, and ``tp`` read again from the log's start,
    the position returned."""
    stored = positions.get(tp, 0)
    low, high = logs.watermarks(tp)
    report_moved(region, tp, stored, low, high, Verdict.RECREATED if stored >= high else Verdict.EXPIRED)
    logs.seek(tp, low, positions)
    return int(low)
