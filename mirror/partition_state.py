"""What the replicator knows of one source partition: position, the source's end, freshness."""

from __future__ import annotations

from dataclasses import dataclass

from mirror.checkpoints import Checkpoint


@dataclass
class PartitionState:
    """What the replicator knows of one source partition (pure bookkeeping, no I/O)."""

    next_offset: int = 0  # first source offset not yet acknowledged in the target
    source_end: int = 0  # the source's end as last seen (high watermark or past the last record read)
    fresh_ms: int = 0  # source time up to which the partition is complete in the target
    seen_ms: int = 0  # when the source last answered
    last_record_ms: float = 0.0  # local clock: when a record of this partition was last consumed

    def copied(self, next_offset: int, newest_ts_ms: int | None) -> None:
        self.next_offset = max(self.next_offset, next_offset)
        self.source_end = max(self.source_end, self.next_offset)
        if newest_ts_ms is not None:
            self.fresh_ms = max(self.fresh_ms, newest_ts_ms)

    def probed(self, end: int, at_ms: int, quiet: bool) -> None:
        """The source said its end is ``end`` at ``at_ms``. ``quiet``: the consumer was fetching and
        nothing of this partition arrived for a whole idle window, so the records read are all there
        is (tansu's reported end can be below the real one: a reported end at or below the position
        then means "complete up to now", and one above it means "behind")."""
        self.seen_ms = at_ms
        if quiet:
            self.source_end = max(end, self.next_offset)
            if self.next_offset >= end:
                self.fresh_ms = max(self.fresh_ms, at_ms)
        else:
            self.source_end = max(self.source_end, end, self.next_offset)

    @property
    def lag(self) -> int:
        return max(0, self.source_end - self.next_offset)

    def lag_seconds(self, now_ms: int) -> float:
        return max(0.0, (now_ms - self.fresh_ms) / 1000)

    def checkpoint(self) -> Checkpoint:
        return Checkpoint(self.next_offset, max(self.source_end, self.next_offset), self.fresh_ms, self.seen_ms)
