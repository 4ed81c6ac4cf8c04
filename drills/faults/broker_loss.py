"""The embedded broker (tansu keeps everything in memory) killed under load and started again
empty: every topic, Connect's stored configs and offsets, and every consumer group's offsets are
gone. What the pipeline must do: keep serving, notice, and end with nothing lost that the source
still has. What is found, when, and what is repaired is reported:

* before the fault, a few documents are published straight to the CMS topic (their only source
  of truth is that topic, which the loss takes away);
* after the restart, ``regionsync reconcile --repair --json`` runs as an operator would: rows
  deleted while the change feed could not say so are removed, missing or stale ones re-read; the
  CMS documents are found held from a topic that lost its history and are NOT deleted;
* the CMS producer then publishes its documents again (what the reconcile report asks for);
* the dialog log is gone with the broker: the region stores keep the sessions (and S3 keeps
  snapshots); the workers notice the recreated log and fold the new one on top.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from typing import Any

import orjson

from drills import inject
from drills.faults.checks import LogFolder, wait_converged
from drills.faults.context import FaultContext, SkipCounter
from drills.faults.model import TrialPlan, TrialResult
from drills.faults.plan import Timing
from drills.faults.scenario import Scenario, result_of
from regionsync.stack import broker
from streams.publisher import CmsPublisher, PublishError


class BrokerLoss(Scenario):
    name = "broker-loss"
    full_trials, quick_trials = 3, 1
    # After the restart the load goes on long enough for turns to be acknowledged again: a region's
    # publisher that the broker no longer knows gives up on its send after 30 s and starts anew.
    timing = Timing(fault_after=(4.0, 10.0), fault=(0.0, 5.0), after=(40.0, 50.0))
    quick_timing = Timing(fault_after=(4.0, 6.0), fault=(0.0, 2.0), after=(40.0, 45.0))
    summary = "the embedded broker killed and restarted empty (every topic and offset lost) under load; reconcile"
    cms_docs = 5

    def __init__(self) -> None:
        self.published: dict[str, dict[str, Any]] = {}  # every CMS document the trials published

    def run_trial(self, ctx: FaultContext, plan: TrialPlan, folder: LogFolder) -> TrialResult:
        s = ctx.settings
        run = f"{plan.index}x{plan.seed % 10_000}"
        docs: list[dict[str, Any]] = [{"doc_id": f"brokerloss-{run}-cms-{i}", "version": 1, "op": "upsert",
                 "document": {"title": f"Published straight to Kafka {i}",
                              "body": f"A CMS document {i} of broker-loss trial {run}, whose only source is the topic.",
                              "tags": ["cms"]}} for i in range(self.cms_docs)]
        publisher = CmsPublisher(s)
        publisher.publish(docs)
        # The producer's own record of what it published, over every trial: a later loss takes
        # away the events of earlier trials' documents too (published again after their own loss).
        published = self.published
        published.update({str(d["doc_id"]): d for d in docs})
        skips = SkipCounter(ctx)
        workload = ctx.workload(plan.seed, run_id=f"brokerloss-{run}")
        notes: dict[str, Any] = {"cms_documents": len(docs)}
        try:
            # The suite's own fold of the dialog log follows it closely up to the loss: what the
            # log held is then known, and what it lost can be told from what the regions kept.
            with folder.witness():
                time.sleep(plan.fault_after_s)
                fault_at, wall0 = time.monotonic(), time.time()  # wall time: the workload's clock
                inject.kill(s, [broker.NAME])
                time.sleep(plan.fault_s)
                inject.restart(s, [broker.NAME])  # started empty; regionsync's topics created again
                restarted_at = time.monotonic()
                window = (wall0, time.time())
                notes["broker_down_s"] = round(restarted_at - fault_at, 2)
                time.sleep(plan.after_s)
        finally:
            load = workload.stop()
        acked_after = sum(1 for a in load.acks if a.acked_at > time.time() - (time.monotonic() - restarted_at))
        notes["turns_acked_after_restart"] = acked_after
        # What an operator does after the broker lost its data: a full reconcile with repair.
        started = time.monotonic()
        out = ctx.cli("reconcile", "--repair", "--json", "--timeout", "300", timeout=900)
        report = _report(out.stdout)
        notes["reconcile_exit"] = out.returncode
        notes["reconcile_after_restart_s"] = round(started - restarted_at, 1)
        notes["reconcile_s"] = round(time.monotonic() - started, 1)
        notes.update(_detected(report))
        # The CMS producer publishes again what only the lost topic knew.
        # As a CMS producer does from its own source of truth: everything it published whose event
        # the topic lost (this trial's documents, and earlier trials' again).
        orphans = set(notes.get("cms_history_orphans", []))
        republished = [doc_id for doc_id in published if doc_id in orphans]
        problems: list[str] = []
        if republished:
            try:
                _publish(publisher, [published[doc_id] for doc_id in republished])
            except PublishError as exc:
                problems.append(f"the CMS producer could not publish again after the loss: {exc}")
        notes["cms_republished_by_producer"] = len(republished)
        end = wait_converged(s, folder, load, ctx.converge_timeout_s, log_lost=True)
        if end.converged:
            # From now on the reference for these sessions is what every region agreed on (the
            # log no longer has their beginning) plus what the new log adds: later trials compare
            # every session with that, exactly.
            folder.adopt(s.regions[0])
        notes["dialog_log_restarts_seen"] = folder.restarts
        notes["dialog_log_lost_turns"] = len(end.sessions.log_lost_turns)
        result = result_of(plan, 1, end, skips.total(), load, notes, window)
        problems += result.problems
        if not report:
            problems.append(f"reconcile printed no report (exit {out.returncode}): {out.stderr[-300:]}")
        return TrialResult(plan, 1, result.lost, result.stale, result.duplicates, result.converge_s,
                           result.lost_detail, result.stale_detail, result.notes, problems=tuple(problems),
                           availability=result.availability)

    def note(self, trials: Sequence[TrialResult]) -> str:
        parts = []
        for t in trials:
            n = t.notes
            if "reconcile_exit" not in n:
                continue
            parts.append(
                f"dialog log lost the events of {n.get('dialog_log_lost_turns', '?')} acknowledged turns, kept by "
                f"every region ({n.get('turns_acked_after_restart', '?')} more acknowledged after the restart); "
                f"reconcile {n['reconcile_after_restart_s']:.0f}s after the restart found "
                f"{_counts(n.get('drift_counts', {}))}; CMS history lost: {n.get('cms_history_lost')} "
                f"({len(n.get('cms_history_orphans', []))} kept, republished by the producer); repaired: "
                f"{n.get('reread', 0)} re-read, {n.get('deletes', 0)} deleted, {n.get('republished', 0)} republished; "
                f"left: {n.get('remaining', '?')}"
            )
        return " | ".join(parts)


def _publish(publisher: CmsPublisher, docs: list[dict[str, Any]], attempts: int = 3) -> None:
    """As a CMS producer would: a publish that was not acknowledged is tried again."""
    for attempt in range(attempts):
        try:
            publisher.publish(docs)
            return
        except PublishError:
            if attempt == attempts - 1:
                raise


def _report(stdout: str) -> dict[str, Any]:
    try:
        data = orjson.loads(stdout)
    except orjson.JSONDecodeError:
        return {}
    return data if isinstance(data, dict) else {}


def _detected(report: dict[str, Any]) -> dict[str, Any]:
    if not report:
        return {}
    counts: dict[str, int] = {}
    for region_counts in (report.get("counts") or {}).values():
        for kind, n in region_counts.items():
            counts[kind] = counts.get(kind, 0) + n
    history = report.get("cms_history") or {}
    repair = report.get("repair") or {}
    remaining = report.get("remaining")
    return {
        "drift_counts": counts,
        "cms_history_lost": bool(history.get("lost")),
        "cms_history_evidence": history.get("evidence", []),
        "cms_history_orphans": history.get("orphans", []),
        "reread": len(repair.get("reread_ids", [])),
        "deletes": len(repair.get("deletes", [])),
        "republished": len(repair.get("republish_ids", [])),
        "unrepairable": len(repair.get("unrepairable", [])),
        "remaining": None if remaining is None else len(remaining),
    }


def _counts(counts: dict[str, int]) -> str:
    found = ", ".join(f"{k} {v}" for k, v in counts.items() if v)
    return found or "no drift"
