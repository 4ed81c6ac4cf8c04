"""The poison storm: thousands of hostile events (poison.py) on the CMS producers' topic and the
Debezium topic, mixed with good CMS documents and the live workload's real changes. Expected:
no worker crashes or restarts, every hostile event in the dead-letter topic at its own
coordinates with a reason that is right for it, every good document in every region."""

from __future__ import annotations

import logging
import time
from collections import Counter
from collections.abc import Sequence
from typing import Any

from confluent_kafka import KafkaError, Message

from drills import inject
from drills.faults.checks import LogFolder, wait_converged
from drills.faults.context import FaultContext, SkipCounter
from drills.faults.model import TrialPlan, TrialResult
from drills.faults.plan import Timing
from drills.faults.scenario import Scenario, result_of
from regionsync.kafka import new_producer, read_topic
from regionsync.settings import Settings
from regionsync.settings_parts import KafkaSettings
from stack import stack
from streams.deadletter import DeadLetter

log = logging.getLogger(__name__)

Coordinates = tuple[str, int, int]


class PoisonStorm(Scenario):
    name = "poison-storm"
    full_trials, quick_trials = 1, 1
    timing = Timing(fault_after=(2.0, 2.0), fault=(0.0, 0.0), after=(0.0, 0.0))
    summary = "10,000 generated hostile events on the CMS and Debezium topics, mixed with good ones"
    hostile_full, good_full = 10_000, 800
    hostile_quick, good_quick = 300, 30

    def run_trial(self, ctx: FaultContext, plan: TrialPlan, folder: LogFolder) -> TrialResult:
        from drills.faults.poison import CMS, Good, Hostile, storm

        s = ctx.settings
        n_hostile, n_good = (self.hostile_quick, self.good_quick) if self.quick else (self.hostile_full, self.good_full)
        t0 = time.monotonic()
        events = storm(n_hostile, n_good, plan.seed, f"{plan.index}x{plan.seed % 10_000}", s.max_document_bytes)
        generated_s = time.monotonic() - t0
        workers = [stack.CHANGES, *(stack.indexer_name(r) for r in s.regions)]
        pids = {w: inject.main_pid(s, w) for w in workers}
        agent_log = s.state_dir / "logs" / f"{stack.CHANGES}.log"
        log_mark = agent_log.stat().st_size if agent_log.exists() else 0
        skips = SkipCounter(ctx)
        workload = ctx.workload(plan.seed, run_id=f"storm-{plan.index}-{plan.seed % 10_000}")
        try:
            time.sleep(plan.fault_after_s)
            wall0 = time.time()  # the storm's window, on the workload's clock
            topics = {CMS: s.cms_topic, "cdc": s.cdc_topic}
            where = produce(s.kafka(), [(topics[e.topic] if isinstance(e, Hostile) else s.cms_topic, e.key, e.value)
                                                for e in events])
            produced_s = time.monotonic() - t0 - generated_s
            window = (wall0, time.time())
        finally:
            load = workload.stop()
        end = wait_converged(s, folder, load, ctx.converge_timeout_s)

        hostile = {coords for event, coords in zip(events, where, strict=True) if isinstance(event, Hostile)}
        waited = time.monotonic()
        letters = _dead_letters(s, hostile, ctx.converge_timeout_s)
        waited = time.monotonic() - waited
        missing, misfiled, reasons = [], [], Counter[str]()
        kinds = Counter[str]()
        for event, coords in zip(events, where, strict=True):
            if not isinstance(event, Hostile):
                continue
            kinds[f"{event.topic}:{event.kind}"] += 1
            found = letters.get(coords, [])
            if not found:
                missing.append(f"{event.topic}:{event.kind} at {coords[0]}[{coords[1]}]@{coords[2]}")
                continue
            for letter in found:
                reasons[letter.reason] += 1
            if not any(letter.reason in event.reasons and letter.detail for letter in found):
                misfiled.append(f"{event.topic}:{event.kind} -> {[letter.reason for letter in found]} "
                                f"(expected one of {sorted(event.reasons)})")
        crashes = [w for w in workers if inject.main_pid(s, w) != pids[w]]
        retries = _retries(agent_log, log_mark)
        lost = [f"no dead letter: {m}" for m in missing]
        notes: dict[str, Any] = {
            "hostile": sum(kinds.values()),
            "good_documents": len({e.doc_id for e in events if isinstance(e, Good)}),
            "good_events": sum(1 for e in events if isinstance(e, Good)),
            "dead_letters_by_reason": dict(reasons.most_common()),
            "hostile_by_kind": dict(kinds.most_common()),
            "misfiled": len(misfiled),
            "misfiled_examples": misfiled[:10],
            "crashed_or_restarted": crashes,
            "agent_batch_retries": retries,
            "generate_s": round(generated_s, 1),
            "produce_s": round(produced_s, 1),
            "dead_letters_after_converged_s": round(waited, 1),  # reading included
        }
        result = result_of(plan, sum(kinds.values()), end, skips.total(), load, notes, window)
        lost_all = list(result.lost_detail) + lost
        problems = [*result.problems, *(f"wrong dead-letter reason: {m}" for m in misfiled),
                    *(f"{w} crashed or restarted" for w in crashes)]
        if retries:
            problems.append(f"the change agent retried {retries} batches (a failure inside the batch, not poison)")
        return TrialResult(plan, result.faults, len(lost_all), result.stale, result.duplicates, result.converge_s,
                           tuple(lost_all), result.stale_detail, result.notes, problems=tuple(problems),
                           availability=result.availability)

    def note(self, trials: Sequence[TrialResult]) -> str:
        if not trials or "hostile" not in trials[-1].notes:
            return ""
        n = trials[-1].notes
        crashes = len(n["crashed_or_restarted"]) + n["agent_batch_retries"]
        return (f"{n['hostile']} hostile events + {n['good_events']} good ({n['good_documents']} documents): "
                f"{crashes} crashes/batch retries, {n['misfiled']} dead letters with a wrong reason; "
                f"reasons: {', '.join(f'{k} {v}' for k, v in list(n['dead_letters_by_reason'].items())[:6])}")


def produce(kafka: KafkaSettings, records: Sequence[tuple[str, bytes | None, bytes | None]]) -> list[Coordinates]:
    """Produce every record (acks=all), in order; the coordinates each was written at."""
    producer = new_producer(kafka.producer({
        "linger.ms": 20, "message.max.bytes": 32 * 1024 * 1024, "queue.buffering.max.kbytes": 512 * 1024,
    }))
    where: list[Coordinates | None] = [None] * len(records)
    errors: list[str] = []

    def delivered(i: int) -> Any:
        def cb(err: KafkaError | None, msg: Message) -> None:
            if err is not None:
                errors.append(f"record {i}: {err}")
            else:
                where[i] = (str(msg.topic()), int(msg.partition() or 0), int(msg.offset() or 0))
        return cb

    for i, (topic, key, value) in enumerate(records):
        while True:
            try:
                producer.produce(topic, key=key, value=value, on_delivery=delivered(i))
                break
            except BufferError:
                producer.poll(0.1)
        producer.poll(0)
    left = producer.flush(120)
    if left or errors or any(w is None for w in where):
        raise RuntimeError(f"storm: {left} records unacknowledged, {len(errors)} failed: {errors[:3]}")
    return [w for w in where if w is not None]


def _retries(path: Any, start: int) -> int:
    """Batches the change agent had to retry (it logs each) since ``start`` bytes into its log."""
    try:
        with open(path, "rb") as fh:
            fh.seek(start)
            text = fh.read().decode("utf-8", "replace")
    except OSError:
        return 0
    return text.count("failed; retrying")


def _dead_letters(settings: Settings, hostile: set[Coordinates], timeout_s: float) -> dict[Coordinates, list[DeadLetter]]:
    """Every dead letter by the coordinates of the record it sets aside, read again until every
    hostile record has one or ``timeout_s`` passed: documents that converged say nothing of how far
    the change agent is on another partition (seen: 40 hostile CDC records of one partition without
    a letter yet when the documents had converged)."""
    deadline = time.monotonic() + timeout_s
    while True:
        letters: dict[Coordinates, list[DeadLetter]] = {}
        for msg in read_topic(settings, settings.dlq_topic):
            letter = DeadLetter.from_bytes(msg.value())
            letters.setdefault((letter.topic, letter.partition, letter.offset), []).append(letter)
        if hostile <= letters.keys() or time.monotonic() > deadline:
            return letters
        time.sleep(1.0)
