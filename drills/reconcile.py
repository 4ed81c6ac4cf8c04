"""`regionsync reconcile`: compare every region with the source of truth, and repair it.

The incremental half of the sync (Debezium -> change agent -> indexers) cannot see what it was
never told: after the embedded broker and the Connect worker restarted (topics and Connect's
offsets live in the broker's memory), Debezium took a new snapshot, which carries no deletes,
and rows deleted meanwhile stayed in every region while lag read 0. This is the full half: read
the table and the CMS topic, read every region document by document, classify the differences
(drills/diff.py), and with ``repair`` re-drive them through the pipeline's own path
(drills/plan.py), then scan again until the regions match or the timeout passes.

A change in flight looks like drift for a moment; a difference counts only if it is still there
after ``settle_s`` (a second scan), unless the first scan found nothing.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from confluent_kafka import KafkaError, Message
from tenacity import Retrying, retry_if_exception_type, stop_after_attempt, wait_fixed

from drills import progress
from drills.diff import Drift, Origin, classify_region, counts_by_kind
from drills.errors import BadInput, DrillsError
from drills.history import CmsHistory, assess, held_offsets
from drills.plan import RepairPlan, plan_repair
from drills.reread import request_reread
from drills.source import SourceSnapshot, read_source
from regionsync.kafka import new_producer
from regionsync.settings import Settings
from streams.events import DocRecord, RecordOp, SourceRef

if TYPE_CHECKING:
    from indexer.ports import IndexReader

log = logging.getLogger(__name__)

ORIGIN_HEADER = "regionsync-origin"


@dataclass
class ReconcileReport:
    regions: list[str]
    documents_in_source: int = 0
    drifts: list[Drift] = field(default_factory=list)
    plan: RepairPlan | None = None
    remaining: list[Drift] | None = None  # after a repair: what still differs
    seconds: float = 0.0
    rounds: int = 0  # repair rounds run (a round repairs what drifted while the previous one ran)
    cms_history: CmsHistory | None = None  # did the CMS producers' topic lose events regions hold?

    @property
    def drift_found(self) -> bool:
        return bool(self.drifts)

    @property
    def repaired(self) -> bool:
        return self.plan is not None and self.remaining is not None and not self.remaining

    def to_dict(self) -> dict[str, Any]:
        return {
            "regions": self.regions,
            "documents_in_source": self.documents_in_source,
            "drift_found": self.drift_found,
            "counts": {r: counts_by_kind([d for d in self.drifts if d.region == r]) for r in self.regions},
            "drifts": [d.to_dict() for d in self.drifts],
            "repair": None if self.plan is None else self.plan.to_dict(),
            "remaining": None if self.remaining is None else [d.to_dict() for d in self.remaining],
            "repair_rounds": self.rounds,
            "cms_history": None if self.cms_history is None else self.cms_history.to_dict(),
            "seconds": round(self.seconds, 3),
        }


def check_regions(settings: Settings, region: str | None) -> list[str]:
    if region is None:
        return list(settings.regions)
    if region not in settings.regions:
        raise BadInput(f"unknown region {region!r}; configured regions: {', '.join(settings.regions)}")
    return [region]


@dataclass
class Scan:
    """One pass over the source and the regions."""

    source: SourceSnapshot
    drifts: list[Drift]
    # Per region and document, the highest version the region holds (chunks or bookkeeping,
    # deleted markers included).
    held: dict[str, dict[str, int]]
    # Per region and partition of the CMS topic, the highest offset its chunks were applied from.
    cms_offsets: dict[str, dict[int, int]]

    def cms_history(self, watermarks: dict[int, tuple[int, int]], topic: str) -> CmsHistory:
        orphans = {d.doc_id for d in self.drifts if d.origin is Origin.CMS_LOST}
        return assess(topic, watermarks, self.cms_offsets, orphans)


def scan(settings: Settings, regions: Sequence[str]) -> Scan:
    """One pass: the source, then each region."""
    from indexer.milvus_reader import MilvusIndexReader

    source = read_source(settings)
    result = Scan(source, [], {}, {})
    for region in regions:
        rows, states = _read_region(MilvusIndexReader.for_region(settings, region), region)
        mine = result.held.setdefault(region, {})
        for doc_id, state in states.items():
            mine[doc_id] = max(mine.get(doc_id, state.version), state.version)
        for row in rows:
            doc_id, version = str(row["doc_id"]), int(row["version"])
            mine[doc_id] = max(mine.get(doc_id, version), version)
        result.cms_offsets[region] = held_offsets(settings.cms_topic, rows)
        result.drifts.extend(classify_region(region, source.view, rows))
    return result


def cms_watermarks(settings: Settings) -> dict[int, tuple[int, int]]:
    from drills.kafka_io import watermarks

    try:
        return watermarks(settings.kafka(), settings.cms_topic, probe=True)
    except BadInput:  # the topic does not exist (yet, or any more): it holds nothing
        return {}


def _read_region(sink: IndexReader, region: str, attempts: int = 5, pause_s: float = 2.0) -> tuple[list[dict[str, Any]], Any]:
    """Every chunk row and bookkeeping row of a region. A region that does not answer is tried
    again a few times (a busy milvus-lite server refuses connections under load) before the error
    propagates: a reconcile must not report a region it could not read as drifted."""
    from indexer.errors import RegionUnavailable

    def read() -> tuple[list[dict[str, Any]], Any]:
        with progress.bar(None, f"reading {region}", unit="chunk") as pbar:
            rows = sink.dump_chunks(on_page=pbar.update)
        return rows, sink.doc_states()

    try:
        return Retrying(stop=stop_after_attempt(attempts), wait=wait_fixed(pause_s), reraise=True,
                        retry=retry_if_exception_type(RegionUnavailable))(read)
    finally:
        sink.close()


def _key(d: Drift) -> tuple[str, str, str]:
    return d.region, d.doc_id, d.kind.value


def reconcile(
    settings: Settings,
    region: str | None = None,
    repair: bool = False,
    settle_s: float = 2.0,
    timeout_s: float = 300.0,
    sleep: Callable[[float], None] = time.sleep,
    clock: Callable[[], float] = time.monotonic,
) -> ReconcileReport:
    regions = check_regions(settings, region)
    started = clock()
    found = scan(settings, regions)
    if found.drifts and settle_s > 0:
        sleep(settle_s)
        first = {_key(d) for d in found.drifts}
        found = scan(settings, regions)
        found.drifts = [d for d in found.drifts if _key(d) in first]
    drifts, source = found.drifts, found.source
    report = ReconcileReport(regions, len(source.view.expected), drifts)
    report.cms_history = found.cms_history(cms_watermarks(settings), settings.cms_topic)
    for line in report.cms_history.evidence():
        log.warning("CMS topic history lost: %s", line)
    for d in drifts:
        log.info("drift %s %s %s (%s): %s", d.region, d.kind.value, d.doc_id, d.origin.value, d.detail)
    if repair and drifts:
        report.plan, report.remaining, report.rounds = repair_rounds(
            settings, regions, found, settle_s, clock() + timeout_s, sleep, clock)
    report.seconds = clock() - started
    return report


MAX_ROUNDS = 3


def repair_rounds(
    settings: Settings,
    regions: Sequence[str],
    found: Scan,
    settle_s: float,
    deadline: float,
    sleep: Callable[[float], None],
    clock: Callable[[], float],
) -> tuple[RepairPlan, list[Drift], int]:
    """Repair, wait until what was planned is repaired, and repair again what drifted meanwhile.

    A round's plan covers the drift found before it. A change that lands while it runs can make
    another document drift (seen after the embedded broker lost its topics: the change agent
    finished a batch of the lost topic's events late and put a document deleted since back into
    every region): that is confirmed by a second scan after ``settle_s`` and repaired in the next
    round, up to :data:`MAX_ROUNDS`. Returns the plans merged, what still differs, the rounds."""
    plans: list[RepairPlan] = []
    drifts = found.drifts
    remaining: list[Drift] = []
    while True:
        cms_versions = {doc_id: v for doc_id, (v, _op) in found.source.view.cms_versions.items()}
        plan = plan_repair(drifts, cms_versions, found.held)
        plans.append(plan)
        execute(settings, plan, found.source)
        remaining = wait_repaired(settings, regions, plan, max(0.0, deadline - clock()), sleep, clock)
        skip = {doc_id for p in plans for doc_id, _why in p.unrepairable}
        new = {_key(d) for d in remaining if d.doc_id not in skip}
        if not new or len(plans) >= MAX_ROUNDS or clock() > deadline:
            break
        log.info("%d documents drifted while the repair ran: another round", len({k[1] for k in new}))
        sleep(settle_s)
        found = scan(settings, regions)
        drifts = [d for d in found.drifts if _key(d) in new]
        if not drifts:
            remaining = found.drifts
            break
    return merge_plans(plans), remaining, len(plans)


def merge_plans(plans: Sequence[RepairPlan]) -> RepairPlan:
    deletes: dict[str, int] = {}
    for p in plans:
        for doc_id, version in p.deletes:
            deletes[doc_id] = max(deletes.get(doc_id, version), version)
    repaired = {d for p in plans for d in (*p.reread_ids, *p.republish_ids)} | set(deletes)
    return RepairPlan(
        tuple(sorted({d for p in plans for d in p.reread_ids})),
        tuple(sorted({d for p in plans for d in p.republish_ids})),
        tuple(sorted(deletes.items())),
        tuple(sorted({(d, w) for p in plans for d, w in p.unrepairable if d not in repaired})),
    )


def execute(settings: Settings, plan: RepairPlan, source: SourceSnapshot) -> None:
    """Send the plan through the pipeline: rows re-read, CMS events again, delete records."""
    if plan.reread_ids:
        version = request_reread(settings, plan.reread_ids)
        log.info("asked the change agent to re-read %d rows at WAL position %d", len(plan.reread_ids), version)
    if not (plan.republish_ids or plan.deletes):
        return
    producer = new_producer(settings.kafka().producer())
    failures: list[str] = []

    def delivered(err: KafkaError | None, msg: Message) -> None:
        if err is not None:
            failures.append(f"{msg.topic()} {msg.key()!r}: {err}")

    for doc_id in plan.republish_ids:
        msg = source.cms_messages[doc_id]
        headers = list(msg.headers() or []) + origin_headers(msg.topic(), msg.partition(), msg.offset(), "reconcile")
        producer.produce(settings.cms_topic, key=msg.key(), value=msg.value(), headers=headers, on_delivery=delivered)
        producer.poll(0)
    now_ms = int(time.time() * 1000)
    for doc_id, version in plan.deletes:
        record = DocRecord(
            doc_id, version, RecordOp.DELETE, SourceRef("reconcile", settings.chunks_topic, -1, -1, op="delete"),
            produced_ms=now_ms,
        )
        producer.produce(
            settings.chunks_topic, key=doc_id.encode("utf-8"), value=record.to_bytes(),
            headers=[(ORIGIN_HEADER, b"reconcile")], on_delivery=delivered,
        )
        producer.poll(0)
    remaining = producer.flush(30.0)
    if remaining or failures:
        raise DrillsError(f"repair: {remaining} records unacknowledged, {len(failures)} failed: {'; '.join(failures[:3])}")
    log.info("published %d CMS events again, %d delete records", len(plan.republish_ids), len(plan.deletes))


def origin_headers(topic: str, partition: int, offset: int, origin: str) -> list[tuple[str, bytes]]:
    """Where a re-driven record came from (replay and repair add these; existing headers are kept)."""
    return [
        (ORIGIN_HEADER, origin.encode()),
        ("regionsync-origin-topic", topic.encode()),
        ("regionsync-origin-partition", str(partition).encode()),
        ("regionsync-origin-offset", str(offset).encode()),
    ]


def wait_repaired(
    settings: Settings,
    regions: Sequence[str],
    plan: RepairPlan,
    timeout_s: float,
    sleep: Callable[[float], None],
    clock: Callable[[], float],
    interval_s: float = 1.0,
) -> list[Drift]:
    """Scan until no document the plan repairs differs any more, or the timeout passes; returns
    what differs then (the plan's unrepairable documents, and any that drifted meanwhile)."""
    planned = {*plan.reread_ids, *plan.republish_ids, *(doc_id for doc_id, _v in plan.deletes)}
    deadline = clock() + timeout_s
    while True:
        drifts = scan(settings, regions).drifts
        if not any(d.doc_id in planned for d in drifts) or clock() > deadline:
            return drifts
        sleep(interval_s)


def summary_lines(report: ReconcileReport) -> list[str]:
    out = [f"source: {report.documents_in_source} documents; regions: {', '.join(report.regions)}"]
    if report.cms_history is not None and report.cms_history.lost:
        out.append(f"WARNING: the CMS topic {report.cms_history.topic} lost its history; documents held from it "
                   "are never deleted by reconcile (publish them again from the CMS producers):")
        out.extend(f"  {line}" for line in report.cms_history.evidence())
    for region in report.regions:
        counts = counts_by_kind([d for d in report.drifts if d.region == region])
        found = ", ".join(f"{k} {n}" for k, n in counts.items() if n) or "none"
        out.append(f"{region}: drift: {found}")
    for d in report.drifts[:50]:
        out.append(f"  {d.region} {d.kind.value:<23} {d.doc_id} [{d.origin.value}] {d.detail}")
    if len(report.drifts) > 50:
        out.append(f"  ... {len(report.drifts) - 50} more (use --json for all)")
    if report.plan is not None:
        p = report.plan
        out.append(
            f"repair ({report.rounds} round{'s' if report.rounds != 1 else ''}): {len(p.reread_ids)} rows re-read "
            f"from the table, {len(p.republish_ids)} CMS events published again, {len(p.deletes)} delete records; "
            f"{len(p.unrepairable)} not repairable"
        )
        for doc_id, why in p.unrepairable:
            out.append(f"  not repairable: {doc_id}: {why}")
        remaining = report.remaining or []
        out.append("after repair: every region equals the source" if not remaining else f"after repair: {len(remaining)} differences remain")
    out.append(f"{report.seconds:.1f}s")
    return out


