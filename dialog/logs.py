"""The logs a region's dialog worker folds, behind its one hand-assigned consumer.

Which partitions exist (a copy of another region's topic appears when its replicator first runs),
reading each from its stored position, moving one partition elsewhere, pausing a log whose
records wait for another log's, and where the ends are. Hand-assigned, not a consumer group:
the positions live in the state store's transaction (:mod:`dialog.worker`).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence, Sized

from confluent_kafka import OFFSET_BEGINNING, Consumer, KafkaException, Message, TopicPartition

from dialog.errors import DialogError
from dialog.store import TP


class RegionLogs:
    def __init__(self, consumer: Consumer, region: str, own_topic: str, dialog_topics: Sequence[str],
                 control_topics: Sequence[str]) -> None:
        self.consumer = consumer
        self.region = region
        self.own_topic = own_topic
        self.dialog_topics = list(dialog_topics)
        self.control_topics = list(control_topics)
        self.partitions: list[TP] = []
        self._paused: set[TP] = set()

    @property
    def streams(self) -> list[TP]:
        """The dialog partitions (the others carry control records)."""
        return [tp for tp in self.partitions if tp[0] in self.dialog_topics]

    def discover(self) -> list[TP]:
        """Every partition of every topic this region folds that exists now."""
        try:
            meta = self.consumer.list_topics(timeout=10)
        except KafkaException as exc:
            raise DialogError(f"region {self.region}'s broker does not answer: {exc}") from exc
        found = []
        for topic in [*self.dialog_topics, *self.control_topics]:
            tmeta = meta.topics.get(topic)
            if tmeta is not None and tmeta.error is None:
                found += [(topic, p) for p in sorted(tmeta.partitions)]
        if not any(t == self.own_topic for t, _ in found):
            raise DialogError(f"topic {self.own_topic} has no partitions in region {self.region} (does it exist?)")
        return found

    def assign(self, positions: Mapping[TP, int]) -> None:
        """Read every partition from its position (a partition without one from its start)."""
        self.consumer.assign(
            [TopicPartition(t, p, positions.get((t, p), OFFSET_BEGINNING)) for t, p in self.partitions]
        )
        self._paused.clear()

    def seek(self, tp: TP, offset: int, positions: Mapping[TP, int]) -> None:
        try:
            self.consumer.seek(TopicPartition(tp[0], tp[1], offset))
        except KafkaException:  # not being fetched (an error stopped it): assign every partition again
            self.assign({**positions, tp: offset})

    def consume(self, max_events: int, timeout_s: float) -> list[Message]:
        return self.consumer.consume(max_events, timeout_s)

    def fetched_high(self, tp: TP) -> int:
        """The high watermark of the newest fetch answer (exact on tansu too, where ListOffsets is
        not, see regionsync/kafka.py); -1 before any."""
        _low, high = self.consumer.get_watermark_offsets(TopicPartition(*tp), cached=True)
        return int(high)

    def watermarks(self, tp: TP, timeout_s: float = 10) -> tuple[int, int]:
        """The broker's (low, high) for ``tp``, asked now."""
        low, high = self.consumer.get_watermark_offsets(TopicPartition(*tp), timeout=timeout_s, cached=False)
        return int(low), int(high)

    def at_reported_end(self, positions: Mapping[TP, int],
                        hole: Callable[[TP, int, int], bool] = lambda _tp, _pos, _high: False) -> bool:
        """Every partition's position is at or past the end the broker reports (which on tansu can
        be lower than the real end: the worker also waits for polls that bring nothing), or below
        it with nothing in between (``hole(tp, position, end)``: see DialogWorker._hole_at_end)."""
        for tp in self.partitions:
            low, high = self.watermarks(tp, timeout_s=5)
            position = positions.get(tp, low)
            if position < high and not hole(tp, position, high):
                return False
        return True

    def flow_control(self, buffers: Mapping[TP, Sized], high: int = 50_000) -> None:
        """A log whose records wait for another log's (an earlier epoch still being fetched) stops
        being fetched while its buffer is big; it resumes once the buffer drained."""
        pause = [tp for tp in self.streams if len(buffers.get(tp, ())) > high and tp not in self._paused]
        resume = [tp for tp in self._paused if len(buffers.get(tp, ())) < high // 2]
        if pause:
            self.consumer.pause([TopicPartition(*tp) for tp in pause])
            self._paused.update(pause)
        if resume:
            self.consumer.resume([TopicPartition(*tp) for tp in resume])
            self._paused.difference_update(resume)

    def close(self) -> None:
        self.consumer.close()
