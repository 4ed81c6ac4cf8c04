"""How a region indexer forms batches: a record that arrives alone is not held back by the batch
window; only a batch that is filling waits for the rest (fakes only: no broker needed)."""

from __future__ import annotations

from typing import Any

from indexer.worker import RegionIndexer
from regionsync.settings import Settings

from .fake_index import FakeIndex


class FakeMessage:
    def __init__(self, offset: int) -> None:
        self._offset = offset

    def error(self) -> None:
        return None

    def offset(self) -> int:
        return self._offset


class FakeConsumer:
    """Holds ``queued`` messages already fetched; ``arriving`` more come only if one waits."""

    def __init__(self, queued: int, arriving: int) -> None:
        self.queued = [FakeMessage(i) for i in range(queued)]
        self.arriving = [FakeMessage(100 + i) for i in range(arriving)]
        self.timeouts: list[float] = []

    def poll(self, timeout: float) -> FakeMessage | None:
        return self.queued.pop(0) if self.queued else None

    def consume(self, num: int, timeout: float) -> list[FakeMessage]:
        self.timeouts.append(timeout)
        out, self.queued = self.queued[:num], self.queued[num:]
        if timeout > 0:
            take = self.arriving[: num - len(out)]
            self.arriving = self.arriving[len(take):]
            out += take
        return out


def _indexer(consumer: FakeConsumer, batch_size: int = 8) -> RegionIndexer:
    settings = Settings(batch_window_s=0.25)
    fake: Any = consumer
    return RegionIndexer(settings, "east", sink=FakeIndex(), consumer=fake, producer=object(),  # type: ignore[arg-type]
                         batch_size=batch_size)


def test_a_lone_record_does_not_wait_for_the_window() -> None:
    consumer = FakeConsumer(queued=1, arriving=3)
    batch = _indexer(consumer)._poll()
    assert [m.offset() for m in batch] == [0]
    assert consumer.timeouts == [0]  # never waited


def test_a_filling_batch_waits_for_the_rest_up_to_the_batch_size() -> None:
    consumer = FakeConsumer(queued=3, arriving=10)
    batch = _indexer(consumer, batch_size=8)._poll()
    assert [m.offset() for m in batch] == [0, 1, 2, 100, 101, 102, 103, 104]
    assert consumer.timeouts == [0, 0.25]


def test_a_full_batch_does_not_wait() -> None:
    consumer = FakeConsumer(queued=20, arriving=5)
    batch = _indexer(consumer, batch_size=8)._poll()
    assert len(batch) == 8 and consumer.timeouts == [0]
