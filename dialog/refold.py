"""Fold a region's dialog logs again from their start, to the ends they have now.

Why: a promotion learned after this store folded events the promotion fences (this region was the
active one and comes back; a standby that heard of the promotion late) means the sessions hold
turns no other region has. Folding everything again with the promotions known sets those turns
aside in the conflict report (:mod:`dialog.fence`), so the region ends equal to the others. The
worker replaces its store's content with the result in one transaction.
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass

from confluent_kafka import OFFSET_BEGINNING, Consumer, TopicPartition

from dialog.errors import DialogError
from dialog.fence import Promotion
from dialog.fold import Fold
from dialog.keys import KeyRing, keys_for, lookup
from dialog.merge import Merger
from dialog.state import SessionState
from dialog.store import TP
from regionsync.kafka import fetch_ends
from regionsync.settings import Settings


@dataclass(frozen=True)
class Logs:
    """What a region folds: every partition, and which topics carry dialog and control records."""

    partitions: list[TP]
    dialog_topics: list[str]
    control_topics: list[str]


def fold_from_start(settings: Settings, region: str, promotions: list[Promotion], consumer: Consumer, logs: Logs,
                    stopping: threading.Event, timeout_s: float, keyring: KeyRing,
                    ) -> tuple[dict[str, SessionState], Fold] | None:
    """The sessions and the fold (positions, sources, fenced events, counters) of every log read
    from its start to the end it had when this began; None when ``stopping`` was set. Records
    written after that end are folded by the worker afterwards, from the positions returned."""
    ends = fetch_ends(settings.kafka(), logs.partitions, 30.0)
    consumer.assign([TopicPartition(t, p, OFFSET_BEGINNING) for t, p in logs.partitions])
    states: dict[str, SessionState] = {}
    fold = Fold(region, settings.regions, promotions, states, {})
    merger = Merger()
    streams = [tp for tp in logs.partitions if tp[0] in logs.dialog_topics]
    deadline = time.monotonic() + timeout_s

    def at_end(tp: TP) -> bool:
        return merger.fetched_to.get(tp, 0) >= ends.get(tp, 0)

    while any(fold.positions.get(tp, 0) < end for tp, end in ends.items()):
        if stopping.is_set():
            return None
        if time.monotonic() > deadline:
            raise DialogError(f"folding region {region}'s logs again: not at their ends after {timeout_s:.0f}s")
        batch = consumer.consume(settings.dialog_catchup_batch_events, settings.dialog_poll_timeout_s)
        opener = lookup(keys_for(keyring, batch, logs.control_topics))
        for msg in batch:
            if msg.error() is not None:
                continue
            tp = (str(msg.topic()), int(msg.partition() or 0))
            if int(msg.offset() or 0) >= ends.get(tp, 0):
                continue  # past the end taken at the start: the worker folds it afterwards
            if tp[0] in logs.control_topics:
                fold.control(msg)
            else:
                merger.add(msg, opener)
        for msg, event in merger.take(streams, at_end):
            fold.event(msg, event)
    states.update(fold.touched)
    return states, fold
