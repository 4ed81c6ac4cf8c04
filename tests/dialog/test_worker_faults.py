"""The dialog worker when its stored position is gone from the log (a broker that lost its topics,
or retention): it says so, moves to the log's start and folds every new event; before, a log that
started again at offset 0 had every event below the stored position skipped as already folded."""

from __future__ import annotations

import random
from dataclasses import dataclass
from typing import Any

from confluent_kafka import OFFSET_BEGINNING, KafkaError, TopicPartition

from dialog import metrics
from dialog.events import encode, key_of
from dialog.loadgen import conversation
from dialog.logcheck import Verdict, judge
from dialog.memory_store import MemoryStore
from dialog.reducer import fold
from dialog.worker import DialogWorker
from regionsync.settings import Settings

TOPIC = "regionsync.dialog.events"  # east's own dialog topic (the default settings' region east)
TP0 = (TOPIC, 0)


@dataclass
class Msg:
    p: int
    o: int | None
    k: bytes | None = None
    v: bytes | None = None
    err: Any = None

    def error(self) -> Any:
        return self.err

    def partition(self) -> int:
        return self.p

    def offset(self) -> int | None:
        return self.o

    def key(self) -> bytes | None:
        return self.k

    def value(self) -> bytes | None:
        return self.v

    def topic(self) -> str:
        return TOPIC

    def headers(self) -> None:
        return None  # written in this region: no provenance


class Err:
    def __init__(self, code: int) -> None:
        self._code = code

    def code(self) -> int:
        return self._code

    def fatal(self) -> bool:
        return False


class FakeLog:
    """The consumer of a region whose broker holds one dialog partition (no copy of another
    region's topic, no control topic yet: the worker skips what is missing), whose log was
    recreated: it now holds ``events`` at offsets ``low``.."""

    def __init__(self, events: list[Any], low: int = 0) -> None:
        self.records = [Msg(0, low + i, key_of(e), encode(e)) for i, e in enumerate(events)]
        self.low = low
        self.position: int | None = None
        self.seeks: list[int] = []

    def list_topics(self, topic: str | None = None, timeout: float = -1) -> Any:
        assert topic is None, "the worker lists every topic at once"
        part = type("P", (), {})()
        meta = type("M", (), {"error": None, "partitions": {0: part}})()
        return type("T", (), {"topics": {TOPIC: meta}})()

    def assign(self, tps: list[TopicPartition]) -> None:
        assert [(tp.topic, tp.partition) for tp in tps] == [TP0]
        self.position = self.low if tps[0].offset == OFFSET_BEGINNING else tps[0].offset

    def seek(self, tp: TopicPartition) -> None:
        assert (tp.topic, tp.partition) == TP0
        self.seeks.append(tp.offset)
        self.position = tp.offset

    def get_watermark_offsets(self, tp: TopicPartition, timeout: float | None = None,
                              cached: bool = False) -> tuple[int, int]:
        assert (tp.topic, tp.partition) == TP0
        return self.low, self.low + len(self.records)

    def pause(self, tps: list[TopicPartition]) -> None:
        raise AssertionError("one log: the merge never waits for another")

    resume = pause

    def consume(self, n: int, timeout: float) -> list[Msg]:
        assert self.position is not None
        end = self.low + len(self.records)
        if not self.low <= self.position <= end:
            return [Msg(0, None, err=Err(KafkaError._AUTO_OFFSET_RESET))]
        out = self.records[self.position - self.low: self.position - self.low + n]
        self.position += len(out)
        return out

    def close(self) -> None:
        pass


class NoDeadLetters:
    def send(self, records: Any) -> None:
        raise AssertionError("nothing here is malformed")


def worker(consumer: FakeLog, store: MemoryStore) -> DialogWorker:
    w = DialogWorker(Settings(), "east", store, consumer, NoDeadLetters(), None)  # type: ignore[arg-type]
    w.start()
    return w


def test_a_recreated_log_is_folded_from_its_start_and_the_old_sessions_stay() -> None:
    rng = random.Random(3)
    old = conversation("before-loss", rng, turns=3)
    new = conversation("after-loss", rng, turns=2)
    store = MemoryStore(TOPIC)
    store.commit(fold(old).values(), {TP0: 500}, {}, store.stats())  # folded 500 records of the old log
    log = FakeLog(new)
    w = worker(log, store)
    before = metrics.LOG_RESETS.labels("east", "log_recreated")._value.get()
    for _ in range(5):
        w.poll_once()
    assert log.seeks == [0]
    assert store.offsets() == {TP0: len(new)}
    assert {s.session_id for s in store.all_states()} == {"before-loss", "after-loss"}
    assert store.get("after-loss") == fold(new)["after-loss"]
    assert store.get("before-loss") == fold(old)["before-loss"]
    assert metrics.LOG_RESETS.labels("east", "log_recreated")._value.get() == before + 1


def test_events_removed_before_they_were_folded_are_reported_and_the_rest_folded() -> None:
    events = conversation("s", random.Random(4), turns=3)
    store = MemoryStore(TOPIC)
    store.commit([], {TP0: 2}, {}, store.stats())
    log = FakeLog(events[5:], low=5)  # offsets 2..4 expired
    w = worker(log, store)
    before = metrics.LOG_RESETS.labels("east", "events_expired")._value.get()
    for _ in range(3):
        w.poll_once()
    assert log.seeks == [5] and store.offsets() == {TP0: len(events)}
    assert metrics.LOG_RESETS.labels("east", "events_expired")._value.get() == before + 1
    assert store.get("s") is not None and store.get("s").gaps  # type: ignore[union-attr]


class FakeReader:
    """What the worker's position check reads: the same records as the fake log."""

    def __init__(self, log: FakeLog) -> None:
        self.log = log

    def watermarks(self, topic: str, partition: int) -> tuple[int, int]:
        assert (topic, partition) == TP0
        return self.log.low, self.log.low + len(self.log.records)

    def record_at(self, topic: str, partition: int, offset: int) -> tuple[bytes | None, bytes | None] | None:
        assert (topic, partition) == TP0
        i = offset - self.log.low
        if 0 <= i < len(self.log.records):
            return self.log.records[i].k, self.log.records[i].v
        return None

    def close(self) -> None:
        pass


def test_a_recreated_log_that_grew_past_the_stored_position_is_noticed_at_start() -> None:
    """tansu answers a fetch past a partition's end with nothing (no "out of range"): once new
    turns fill the new log past the stored position, only the record before it tells."""
    rng = random.Random(5)
    old = conversation("old", rng, turns=1)  # 4 events folded from the lost log
    new = conversation("new", rng, turns=3)  # 10 events on the recreated log
    store = MemoryStore(TOPIC)
    store.commit(fold(old).values(), {TP0: len(old)}, {}, store.stats())
    log = FakeLog(new)
    w = DialogWorker(Settings(), "east", store, log, NoDeadLetters(), None, log_reader=FakeReader(log))  # type: ignore[arg-type]
    w.start()
    assert w.positions == {TP0: 0}  # moved back before anything was read
    for _ in range(4):
        w.poll_once()
    assert store.get("new") == fold(new)["new"] and store.get("old") == fold(old)["old"]


def test_the_same_log_is_left_alone() -> None:
    events = conversation("s", random.Random(6), turns=2)
    store = MemoryStore(TOPIC)
    store.commit(fold(events[:5]).values(), {TP0: 5}, {}, store.stats())
    log = FakeLog(events)
    w = DialogWorker(Settings(), "east", store, log, NoDeadLetters(), None, log_reader=FakeReader(log))  # type: ignore[arg-type]
    w.start()
    assert w.positions == {TP0: 5} and w.check_positions() == []
    for _ in range(3):
        w.poll_once()
    assert store.get("s") == fold(events)["s"]


def test_judge_on_plain_data() -> None:
    events = conversation("s", random.Random(7), turns=1)
    states = fold(events)
    last = (key_of(events[-1]), encode(events[-1]))
    other = conversation("s", random.Random(8), turns=1)[-1]
    assert judge(0, 0, None, states) is Verdict.SAME_LOG
    assert judge(len(events), 0, last, states) is Verdict.SAME_LOG
    assert judge(len(events), 0, None, states) is Verdict.RECREATED  # past the end now
    assert judge(len(events), 0, (key_of(other), encode(other)), states) is Verdict.RECREATED  # another event
    assert judge(3, 5, None, states) is Verdict.EXPIRED
    assert judge(5, 5, None, {}) is Verdict.SAME_LOG  # the record before was removed, nothing after was
    assert judge(2, 0, (b"k", b"{not json"), states) is Verdict.SAME_LOG  # was dead-lettered


class FlakyStore(MemoryStore):
    """The first commit fails as a restarting Postgres would make it fail."""

    def __init__(self, topic: str) -> None:
        super().__init__(topic)
        self.failures = 1

    def commit(self, *args: Any, **kwargs: Any) -> None:
        if self.failures:
            self.failures -= 1
            import psycopg

            raise psycopg.OperationalError("server closed the connection unexpectedly")
        super().commit(*args, **kwargs)


def test_the_worker_rides_through_its_state_store_failing() -> None:
    events = conversation("s", random.Random(9), turns=2)
    store = FlakyStore(TOPIC)
    log = FakeLog(events)
    w = worker(log, store)
    real_consume = log.consume

    def consume(n: int, timeout: float) -> list[Msg]:
        if store.offsets() == {TP0: len(events)}:
            w.stopping.set()
        return real_consume(n, timeout)

    log.consume = consume  # type: ignore[method-assign]
    w.run()
    assert store.failures == 0 and store.get("s") == fold(events)["s"] and store.offsets() == {TP0: len(events)}


def test_the_worker_rides_through_a_fold_that_could_not_reach_the_logs_ends() -> None:
    """A fold again from the logs' start that timed out (a broker just restarted, slow to answer)
    does not end the worker: it starts again from its store and folds everything."""
    from regionsync.kafka import EndsUnknown

    events = conversation("s", random.Random(9), turns=2)
    store = MemoryStore(TOPIC)
    log = FakeLog(events)
    w = worker(log, store)
    real_poll, failed = w.poll_once, []

    def poll_once() -> bool:
        if not failed:
            failed.append(1)
            raise EndsUnknown("no fetch answer within 30s")
        if store.offsets() == {TP0: len(events)}:
            w.stopping.set()
        return real_poll()

    w.poll_once = poll_once  # type: ignore[method-assign]
    w.run()
    assert failed and store.get("s") == fold(events)["s"] and store.offsets() == {TP0: len(events)}
