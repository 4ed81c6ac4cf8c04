"""Offsets the change agent's consumer stepped over without a record, read again by coordinates.

tansu 0.6.0's S3 engine takes a batch's offsets (raises the partition's high watermark) before it
writes the batch object (``tansu-storage/src/dynostore.rs``, produce), and its fetch serves the
batch objects listed at or after the fetch offset. While one producer's large batch is still being
written, a small batch another producer wrote after it is served in its place: aiokafka takes the
jump for compaction and Faust commits over it, so the record never reaches the agent. Seen in CI:
the poison storm's 10 MB record on the CDC topic (written beside Debezium) got no dead letter.
Several CMS systems publishing at once meet the same race on the CMS topic.

None of the agent's input topics is compacted or written in transactions, so every offset a
partition skips between two records it delivered is such a record, or a hole a broker killed
between the two steps left for good (its producer wrote the batch again at a later offset). The
records are read again by their coordinates (:class:`streams.heal.SourceEvents`) and put back in
front of the next record of their partition; an offset still not served after
:data:`HOLE_WAIT_S` is a hole, skipped and counted
(``regionsync_change_offsets_skipped_total``).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, MutableMapping, Sequence
from typing import Any

from streams.heal import SourceEvents
from streams.metrics import OFFSETS_SKIPPED
from streams.processor import RawMessage

log = logging.getLogger(__name__)

Coordinates = tuple[str, int, int]

# A batch object still being written is served within seconds (a 10 MB one to SeaweedFS on a loaded
# 2-core machine: well under 5 s); a hole is never served. Long enough for the first, short enough
# that a hole holds the agent up once, briefly.
HOLE_WAIT_S = 30.0


def holes(batch: Sequence[RawMessage], expected: MutableMapping[tuple[str, int], int]) -> list[Coordinates]:
    """The offsets ``batch`` steps over, per partition, counted from ``expected`` (the offset after
    the last record seen of each partition; updated). An offset below it is a redelivery (a
    retried batch, a seek back to the committed offset), never a hole."""
    out: list[Coordinates] = []
    for m in batch:
        tp = (m.topic, m.partition)
        want = expected.get(tp)
        if want is not None and m.offset > want:
            out.extend((m.topic, m.partition, offset) for offset in range(want, m.offset))
        if want is None or m.offset >= want:
            expected[tp] = m.offset + 1
    return out


class Gaps:
    """What the agent's consumer stepped over: per input partition, the offset after the last record
    delivered (forgotten at every rebalance: another member may have moved a partition on meanwhile)."""

    def __init__(self, reader: SourceEvents) -> None:
        self.reader = reader
        self.expected: dict[tuple[str, int], int] = {}

    def forget(self, sender: Any, /, *args: Any, signal: Any = None, **kwargs: Any) -> None:
        """A Faust signal receiver (``on_partitions_revoked``, ``on_partitions_assigned``)."""
        self.expected.clear()

    def find(self, batch: Sequence[RawMessage]) -> list[Coordinates]:
        missing = holes(batch, self.expected)
        if missing:
            log.warning("the fetch stepped over %d offsets; reading them again: %s", len(missing), missing[:10])
        return missing

    def mend(self, batch: Sequence[RawMessage], missing: Sequence[Coordinates]) -> list[RawMessage]:
        return refill(batch, missing, self.reader)


def refill(batch: Sequence[RawMessage], missing: Sequence[Coordinates], reader: SourceEvents,
           wait_s: float = HOLE_WAIT_S, clock: Callable[[], float] = time.monotonic,
           sleep: Callable[[float], None] = time.sleep) -> list[RawMessage]:
    """``batch`` with the records at ``missing`` put back, each just before the next record of its
    partition. Offsets not served within ``wait_s`` are holes: left out, logged and counted. A
    reader that fails raises (the batch is retried)."""
    found: dict[Coordinates, tuple[bytes | None, bytes | None]] = {}
    deadline = clock() + wait_s
    while todo := [c for c in missing if c not in found]:
        found.update(reader.fetch(todo))
        if len(found) == len(missing):
            break
        if clock() >= deadline:
            gone = [c for c in missing if c not in found]
            OFFSETS_SKIPPED.inc(len(gone))
            log.warning("%d offsets never served in %.0fs, skipped as holes a killed broker left: %s",
                        len(gone), wait_s, gone[:10])
            break
        sleep(0.2)
    if found:
        log.info("read again %d records the fetch had stepped over: %s", len(found), sorted(found)[:10])
    put_back = sorted(found)
    out: list[RawMessage] = []
    for m in batch:
        before = [c for c in put_back if c[:2] == (m.topic, m.partition) and c[2] < m.offset]
        for c in before:
            put_back.remove(c)
            key, value = found[c]
            out.append(RawMessage(topic=c[0], partition=c[1], offset=c[2], key=key, value=value))
        out.append(m)
    return out
