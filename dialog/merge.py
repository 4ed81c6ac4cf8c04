"""The order in which a region folds its dialog logs (one per region that wrote turns).

Pure: records go in as they are fetched, come out in folding order; the worker fetches and commits.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable, Mapping, Sequence

from confluent_kafka import Message

from dialog.errors import MalformedEvent
from dialog.events import KeyLookup
from dialog.fold import Decoded, decoded
from dialog.store import TP


class Merger:
    """Orders the records of a region's dialog logs so every session folds in sequence.

    A session's events can sit in several logs: it started in one region and went on in another
    after a promotion. Within one log they are in order; across logs the epoch says which came
    first (a promoted region writes at a higher epoch, and only after folding what it had
    received). A session lives in the same partition number of every region's dialog topic (the
    same key, partitioner and partition count everywhere; the replicators keep partitions), so the
    merge is per partition number: the next record folded is the lowest-epoch head among that
    partition's logs, and only while every one of them either has a record waiting or is at its
    end; otherwise the merge waits for the fetch. Records not folded yet keep their log's position
    where it was: nothing is lost by a crash. In steady state one log has news and the others are
    at their end, so a record is folded as soon as it arrives."""

    def __init__(self) -> None:
        self.buffers: dict[TP, deque[tuple[Message, Decoded]]] = {}
        self.fetched_to: dict[TP, int] = {}  # one past the newest record buffered, per log

    def add(self, msg: Message, keys: KeyLookup | None = None) -> None:
        """Buffer a fetched record, decoded (its sealed payload opened with ``keys``)."""
        tp = (str(msg.topic()), int(msg.partition() or 0))
        offset = int(msg.offset() or 0)
        if offset < self.fetched_to.get(tp, 0):
            return  # fetched again after a seek: it is buffered or folded already
        self.fetched_to[tp] = offset + 1
        self.buffers.setdefault(tp, deque()).append((msg, decoded(msg, keys)))

    def take(self, streams: Sequence[TP], at_end: Callable[[TP], bool]) -> list[tuple[Message, Decoded]]:
        """The records that may be folded now, in folding order."""
        by_partition: dict[int, list[TP]] = {}
        for tp in streams:
            by_partition.setdefault(tp[1], []).append(tp)
        out: list[tuple[Message, Decoded]] = []
        for tps in by_partition.values():
            while True:
                heads = [(_epoch(self.buffers[tp][0][1]), tp) for tp in tps if self.buffers.get(tp)]
                if not heads:
                    break
                if any(not self.buffers.get(tp) and not at_end(tp) for tp in tps):
                    break  # a log of this partition may still hold an earlier epoch
                _e, tp = min(heads)
                out.append(self.buffers[tp].popleft())
        return out

    def pending(self) -> int:
        return sum(len(b) for b in self.buffers.values())

    def forget(self, tp: TP, offset: int) -> None:
        """``tp`` is read again from ``offset`` (its log moved): what is buffered of it is dropped."""
        self.buffers.pop(tp, None)
        self.fetched_to[tp] = offset

    def reset(self, positions: Mapping[TP, int]) -> None:
        """Forget what is buffered; the logs are read again from ``positions``."""
        self.buffers.clear()
        self.fetched_to = dict(positions)


def _epoch(item: Decoded) -> int:
    return -1 if isinstance(item, MalformedEvent) else item.epoch  # a dead letter goes first: it folds nothing
