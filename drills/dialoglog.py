"""The fold of a region's dialog logs, read straight from its broker: what its store must equal.

A region folds its own dialog topic and its copies of the other regions' (mirror/policy.py),
with the promotions it knows setting aside what their cuts fence (dialog/fence.py). The reference
here reads every record of those topics from the start to the end the fetch path reports
(regionsync/kafka.py), learns every promotion first (its control topics and the store's own
record of promotions), and folds the events with the same pure reducer; the drills and the
fault suite compare the region's store, and what its service shows, with it.
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from dataclasses import dataclass

from confluent_kafka import Message

from dialog.errors import MalformedEvent
from dialog.events import decode
from dialog.fence import Promotion
from dialog.fold import Fold
from dialog.keys import keys_for, lookup
from dialog.pg_store import PostgresStore
from dialog.state import SessionState
from dialog.store import TP, FencedEvent
from drills.errors import DrillsError
from mirror import policy
from regionsync.kafka import EndsUnknown, ReadTimeout, fetch_ends, new_consumer, read_to_end
from regionsync.settings import Settings
from regionsync.settings_parts import KafkaSettings


@dataclass(frozen=True)
class RegionLog:
    region: str
    states: dict[str, SessionState]
    ends: dict[TP, int]  # end offset of every dialog partition read (the store must reach these)
    events: int  # dialog records read
    fenced: tuple[FencedEvent, ...]
    promotions: tuple[Promotion, ...]


class LogCache:
    """What was read of each partition, per broker: a durable log's records never change, so a
    later read fetches only what came since. The fault suite reads every region's logs at every
    check of every trial; read whole each time, that took longer than the check's timeout once a
    run's logs had grown (tansu's S3 engine keeps each produced batch, a turn, as an object)."""

    def __init__(self) -> None:
        self._parts: dict[tuple[str, str, int], tuple[int, list[Message]]] = {}
        # The last fold of each region and what it was folded from: the fault suite's end check
        # polls every second once the load stopped, and folding a run's whole logs again each
        # time (decoding and opening every event) kept a core busy for nothing.
        self.folds: dict[str, tuple[object, RegionLog]] = {}

    def read(self, kafka: KafkaSettings, ends: Mapping[TP, int], timeout_s: float) -> list[Message]:
        """Every record of each partition below its end in ``ends``, read from the last record
        read (from the start for a partition now shorter than that: it was recreated). Kept only
        up to the last record received, never up to an end the read took for a hole: a slow
        broker that answered "nothing" there is asked again next time."""
        start: dict[TP, int] = {}
        for (topic, p), end in ends.items():
            reached, _records = self._parts.get((kafka.bootstrap, topic, p), (0, []))
            if end < reached:
                self._parts.pop((kafka.bootstrap, topic, p))
                reached = 0
            start[(topic, p)] = reached
        new = list(read_to_end(kafka, ends, start=start, timeout=timeout_s))  # all or nothing: kept once read
        for msg in new:
            key = (kafka.bootstrap, str(msg.topic()), int(msg.partition() or 0))
            self._parts.setdefault(key, (0, []))[1].append(msg)
        out: list[Message] = []
        for (topic, p), end in ends.items():
            key = (kafka.bootstrap, topic, p)
            records = self._parts.get(key, (0, []))[1]
            last = int(records[-1].offset() or 0) + 1 if records else 0
            self._parts[key] = (max(last, start[(topic, p)]), records)
            out.extend(m for m in records if int(m.offset() or 0) < end)
        return out


def read_all(settings: Settings, region: str, timeout_s: float = 120.0,
             cache: LogCache | None = None) -> tuple[list[Message], dict[TP, int]]:
    """Every record of the region's dialog and control topics, with the ends read to (through
    ``cache``: only what came since its last read)."""
    local = settings.for_region(region)
    topics = [*policy.inbound_topics(local, region, local.dialog_topic),
              *policy.inbound_topics(local, region, local.control_topic)]
    consumer = new_consumer(local.kafka().client({"group.id": "regionsync-drill-fold"}))
    try:
        meta = consumer.list_topics(timeout=10)
    finally:
        consumer.close()
    parts = [(t, p) for t in topics if t in meta.topics and meta.topics[t].error is None
             for p in sorted(meta.topics[t].partitions)]
    try:
        ends = fetch_ends(local.kafka(), parts, 30.0)
        records = (cache.read(local.kafka(), ends, timeout_s) if cache is not None
                   else list(read_to_end(local.kafka(), ends, timeout=timeout_s)))
    except (EndsUnknown, ReadTimeout) as exc:
        raise DrillsError(f"reading region {region}'s dialog logs: {exc}") from exc
    return records, ends


def fold_region(settings: Settings, region: str, timeout_s: float = 120.0, cache: LogCache | None = None) -> RegionLog:
    """The reference fold of ``region``'s logs (see the module docstring)."""
    records, ends = read_all(settings, region, timeout_s, cache)
    control_topics = set(policy.inbound_topics(settings, region, settings.control_topic))
    store = PostgresStore.for_region(settings, region)
    try:
        known = store.promotions()
        # The region's keys open the sealed payloads, as its worker does; an erased session's
        # events fold blank here and into the same tombstone.
        keys = keys_for(store.keyring, records, control_topics)
    finally:
        store.close()
    # The same records (the ends, and how many: a stretch once taken for a hole may bring records
    # below the same ends later), promotions and keys fold to the same result.
    basis = (ends, len(records), known, keys)
    if cache is not None and region in cache.folds and cache.folds[region][0] == basis:
        return cache.folds[region][1]
    states: dict[str, SessionState] = {}
    fold = Fold(region, settings.regions, known, states, {}, in_log_order=False, keys=lookup(keys))
    for msg in records:
        if str(msg.topic()) in control_topics:
            fold.control(msg)
    dialog = [m for m in records if str(m.topic()) not in control_topics]
    # A session's events may sit in several regions' logs (it moved at a failover): fold each
    # session in sequence order, whichever log an event is in (malformed records first: they
    # are dead letters, folded nowhere).
    for msg in sorted(dialog, key=_session_order):
        fold.event(msg)
    states.update(fold.touched)
    # Where each log's records really end: below the partition's end when tansu, killed in the
    # middle of a write, came back with an end past its last record (the hole read_to_end
    # probed). The region's worker stops at that record too (dialog/logcheck.HoleProbe), so its
    # store is caught up there; a hole between records is passed by the fetch itself.
    last: dict[TP, int] = {}
    for msg in dialog:
        tp = (str(msg.topic()), int(msg.partition() or 0))
        last[tp] = max(last.get(tp, 0), int(msg.offset() or 0) + 1)
    dialog_ends = {tp: min(end, last.get(tp, 0)) for tp, end in ends.items() if tp[0] not in control_topics}
    result = RegionLog(region, states, dialog_ends, len(dialog), tuple(fold.fenced), tuple(fold.promotions))
    if cache is not None:
        cache.folds[region] = (basis, result)
    return result


def _session_order(msg: Message) -> tuple[str, int, str, int, int]:
    try:
        event = decode(msg.key(), msg.value())
        session, seq = event.session_id, event.seq
    except MalformedEvent:
        session, seq = "", 0
    return session, seq, str(msg.topic()), int(msg.partition() or 0), int(msg.offset() or 0)


def wait_store(settings: Settings, region: str, ends: Mapping[TP, int], timeout_s: float = 120.0
               ) -> dict[str, SessionState]:
    """The region's dialog store once it has folded its logs up to ``ends``."""
    store = PostgresStore.for_region(settings, region)
    try:
        deadline = time.monotonic() + timeout_s
        while True:
            held = store.offsets()
            if all(held.get(tp, 0) >= end for tp, end in ends.items()):
                return {s.session_id: s for s in store.all_states()}
            if time.monotonic() > deadline:
                behind = {f"{t}[{p}]": (held.get((t, p), 0), end) for (t, p), end in ends.items()
                          if held.get((t, p), 0) < end}
                raise DrillsError(f"region {region}'s dialog store did not reach the end of its logs within "
                                  f"{timeout_s:.0f} s (position, end: {behind})")
            time.sleep(0.2)
    finally:
        store.close()
