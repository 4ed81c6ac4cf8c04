"""Which offsets of which partitions a replay covers: a pure decision over the broker's answers.

A range is per partition, ``[start, end)``. The start comes from ``--from-offset`` or from the
broker's offset for ``--from-time`` (the first record at or after that time, or the end if
there is none); the end from ``--to-offset`` (exclusive), ``--to-time``, or the partition's end
when the replay is planned (fixed then, so a replay of a live topic finishes). A start before
the low watermark (records removed by retention) begins at the low watermark; a start past the
end, or a range with nothing in it, is refused before anything is touched.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass

from drills.errors import BadInput


@dataclass(frozen=True)
class PartitionRange:
    partition: int
    start: int
    end: int  # exclusive

    @property
    def count(self) -> int:
        return max(0, self.end - self.start)


def resolve_ranges(
    topic: str,
    watermarks: Mapping[int, tuple[int, int]],
    partitions: Iterable[int] | None,
    starts: Mapping[int, int | None],
    ends: Mapping[int, int | None],
) -> list[PartitionRange]:
    """``watermarks``: partition -> (low, high). ``starts``/``ends``: partition -> offset, or
    None for "the beginning"/"the end"; an offset past the end is the end (a time after the
    last record resolves so). Raises :class:`BadInput`."""
    wanted = sorted(set(partitions)) if partitions is not None else sorted(watermarks)
    unknown = [p for p in wanted if p not in watermarks]
    if unknown:
        raise BadInput(f"topic {topic} has no partition {', '.join(map(str, unknown))} (it has 0..{len(watermarks) - 1})")
    out: list[PartitionRange] = []
    for p in wanted:
        low, high = watermarks[p]
        start = starts.get(p)
        start = low if start is None else start
        if start > high:
            raise BadInput(f"{topic}[{p}]: start offset {start} is past the end of the partition ({high})")
        end = ends.get(p)
        end = high if end is None else min(end, high)
        out.append(PartitionRange(p, max(start, low), max(end, max(start, low))))
    if not any(r.count for r in out):
        raise BadInput(f"{topic}: nothing to replay in the requested range (every partition's range is empty)")
    return out
