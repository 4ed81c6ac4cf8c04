"""Faults of whole regions and of the link between them, under load.

* ``broker-kill``: a region's broker and its object store killed -9 together and started again:
  the log is durable (tansu keeps it in the object store), so nothing may be lost; turns to the
  region fail while its broker is away;
* ``region-loss``: every process of the active region killed -9 (its broker, object store,
  Postgres, Milvus, replicators, workers; Connect and the change agent too, as it is the source
  region); the standby promoted; the region started again (it rejoins as a standby and catches up)
  and promoted back. The acknowledged turns it had not replicated are set aside by the promotion's
  cut: they must be exactly the ones missing, listed in the conflict report (counted apart from
  "lost", which must stay 0);
* ``link-cut``: replication paused both ways (``regionsync mirror pause``) with both regions
  running: the lag grows (measured at the end of the cut), then everything catches up;
* ``split-brain``: the link cut, the standby promoted by force while the active region goes on
  taking turns (customers in both); the link healed: the old active region learns the higher
  epoch, its turns after the cut are set aside everywhere (the conflict report), every region
  ends with the same sessions; then the roles are put back.
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Sequence
from typing import Any

from dialog.pg_store import PostgresStore
from drills import inject
from drills.failover_checks import unreplicated_turns, wait_replicated
from drills.faults.checks import LogFolder, wait_converged
from drills.faults.context import FaultContext, SkipCounter
from drills.faults.model import TrialPlan, TrialResult
from drills.faults.plan import Timing
from drills.faults.scenario import LiveTrial, Scenario, result_of
from drills.workload_model import TurnAck, WorkloadResult
from mirror.checkpoints import set_paused
from mirror.status import inbound
from regionsync.pgdb import region_dsn
from serve.roles import active_region
from stack import broker, seaweed


class BrokerKill(LiveTrial):
    name = "broker-kill"
    full_trials, quick_trials = 4, 1
    timing = Timing(fault_after=(3.0, 8.0), fault=(0.0, 4.0), after=(8.0, 12.0))
    summary = "a region's broker and its object store killed -9 together under load and started again"

    def targets(self, ctx: FaultContext) -> Sequence[str]:
        return list(ctx.settings.regions)

    def inject(self, ctx: FaultContext, plan: TrialPlan, skips: SkipCounter) -> int:
        inject.kill(ctx.settings, [broker.proc_name(plan.target), seaweed.proc_name(plan.target)])
        return 1

    def repair(self, ctx: FaultContext, plan: TrialPlan) -> None:
        inject.restart(ctx.settings, [seaweed.proc_name(plan.target), broker.proc_name(plan.target)])


def _promote(ctx: FaultContext, region: str, force: bool = False, timeout_s: float = 180.0) -> None:
    """``regionsync region promote REGION`` as an operator runs it, again until it works."""
    deadline = time.monotonic() + timeout_s
    while True:
        out = ctx.cli("region", "promote", region, *(["--force"] if force else []), timeout=300)
        if out.returncode == 0:
            return
        if time.monotonic() > deadline:
            raise RuntimeError(f"promoting {region} failed: {out.stderr[-400:]}")
        time.sleep(1.0)


def _set_aside(ctx: FaultContext, load: WorkloadResult, old_active: str, region: str) -> list[TurnAck]:
    """The acknowledged turns of ``old_active`` the conflict report of ``region`` lists."""
    store = PostgresStore.for_region(ctx.settings, region)
    try:
        conflicts = [e.to_dict() for e in store.fenced()]
    finally:
        store.close()
    keys = {(t["session_id"], t["turn"]) for t in unreplicated_turns(load, old_active, conflicts)}
    return [a for a in load.acks if (a.session_id, a.turn) in keys]


def _mirrors(ctx: FaultContext, paused: bool, reason: str = "") -> None:
    s = ctx.settings
    for source, target in s.mirror_pairs():
        set_paused(region_dsn(s, target), source, paused, reason)


class RegionLoss(Scenario):
    name = "region-loss"
    full_trials, quick_trials = 3, 1
    timing = Timing(fault_after=(5.0, 10.0), fault=(5.0, 10.0), after=(5.0, 8.0))
    quick_timing = Timing(fault_after=(4.0, 6.0), fault=(3.0, 5.0), after=(4.0, 6.0))
    summary = ("the whole active (source) region killed -9 under load; the standby promoted; the region started "
               "again as a standby, then promoted back; turns it had not replicated listed, not lost")

    def run_trial(self, ctx: FaultContext, plan: TrialPlan, folder: LogFolder) -> TrialResult:
        s = ctx.settings
        failed = active_region(s)
        standby = next(r for r in s.regions if r != failed)
        skips = SkipCounter(ctx)
        workload = ctx.workload(plan.seed, run_id=f"regionloss-{plan.index}-{plan.seed % 10_000}",
                                avoid_min_s=5.0, avoid_max_s=20.0)
        notes: dict[str, Any] = {"failed": failed, "promoted": standby}
        try:
            time.sleep(plan.fault_after_s)
            wall0, t0 = time.time(), time.monotonic()
            inject.fail_region(s, failed, inject.Mode.KILL, scope=inject.Scope.REGION)
            _promote(ctx, standby)
            notes["promoted_after_s"] = round(time.monotonic() - t0, 2)
            time.sleep(plan.fault_s)
            window = (wall0, time.time())
            inject.restart_region(s, failed, scope=inject.Scope.REGION)
            notes["region_down_s"] = round(time.monotonic() - t0, 2)
            time.sleep(plan.after_s)
        finally:
            load = workload.stop()
        notes["replicated_again"] = wait_replicated(s, list(s.regions), 120.0)
        end = wait_converged(s, folder, load, ctx.converge_timeout_s,
                             set_aside=lambda: _set_aside(ctx, load, failed, standby))
        notes["turns_set_aside"] = len(end.sessions.log_lost_turns)
        notes["set_aside_examples"] = end.sessions.log_lost_turns[:5]
        _promote(ctx, failed)  # the usual roles again for the trials after this one
        return result_of(plan, 1, end, skips.total(), load, notes, window)

    def note(self, trials: Sequence[TrialResult]) -> str:
        aside = [t.notes.get("turns_set_aside", 0) for t in trials if "turns_set_aside" in t.notes]
        promoted = [t.notes["promoted_after_s"] for t in trials if "promoted_after_s" in t.notes]
        if not aside:
            return ""
        return (f"acknowledged turns not replicated when the region was lost (set aside, listed in the conflict "
                f"report): {sum(aside)} over {len(aside)} trials; promotion {min(promoted):.1f}-{max(promoted):.1f} s "
                "after the kill")


class LinkCut(LiveTrial):
    name = "link-cut"
    full_trials, quick_trials = 3, 1
    timing = Timing(fault_after=(3.0, 6.0), fault=(15.0, 30.0), after=(5.0, 8.0))
    quick_timing = Timing(fault_after=(3.0, 4.0), fault=(6.0, 8.0), after=(3.0, 5.0))
    summary = "replication between the regions paused both ways under load, both regions running; resumed"

    def inject(self, ctx: FaultContext, plan: TrialPlan, skips: SkipCounter) -> int:
        _mirrors(ctx, True, f"fault suite: {self.name}")
        return 1

    def repair(self, ctx: FaultContext, plan: TrialPlan) -> None:
        self._lag = {t: inbound(ctx.settings, t) for t in ctx.settings.regions}
        _mirrors(ctx, False)

    def finish(self, ctx: FaultContext, plan: TrialPlan, seen: dict[str, dict[str, Any]], end: Any) -> dict[str, Any]:
        lag = getattr(self, "_lag", {})
        return {"lag_at_end_of_cut": {f"{src}->{dst}": {"records": row["lag_records"], "seconds": row["lag_seconds"]}
                                      for dst, rows in lag.items() for src, row in rows.items()}}

    def note(self, trials: Sequence[TrialResult]) -> str:
        worst = [max((v["seconds"] for v in t.notes.get("lag_at_end_of_cut", {}).values()), default=0.0)
                 for t in trials]
        return f"replication lag at the end of the cut up to {max(worst):.0f} s; caught up after" if worst else ""


class SplitBrain(Scenario):
    name = "split-brain"
    full_trials, quick_trials = 2, 1
    timing = Timing(fault_after=(3.0, 6.0), fault=(8.0, 15.0), after=(5.0, 8.0))
    quick_timing = Timing(fault_after=(3.0, 4.0), fault=(5.0, 7.0), after=(4.0, 6.0))
    summary = ("the link cut, the standby promoted by force while the active region goes on taking turns; the link "
               "healed: the old region's turns after the cut listed in the conflict report, every region equal")

    def run_trial(self, ctx: FaultContext, plan: TrialPlan, folder: LogFolder) -> TrialResult:
        s = ctx.settings
        old = active_region(s)
        new = next(r for r in s.regions if r != old)
        skips = SkipCounter(ctx)
        run = f"splitbrain-{plan.index}-{plan.seed % 10_000}"
        first = ctx.workload(plan.seed, run_id=run)
        second = None
        notes: dict[str, Any] = {"old_active": old, "promoted": new}
        try:
            time.sleep(plan.fault_after_s)
            wall0 = time.time()
            _mirrors(ctx, True, f"fault suite: {self.name}")
            time.sleep(1.0)
            _promote(ctx, new, force=True)  # the standby cannot hear the active region: an operator forces it
            # The replicators notice the pause within a second, but a batch read before it may still
            # land in the new region: turns the old region acknowledged from here on cannot.
            promoted_at = time.time()
            # Customers of the new region (the old one's keep talking to it: it does not know yet).
            second = ctx.workload(plan.seed + 1, run_id=f"{run}-b", start_region=new, doc_rate=0.0, search_rate=0.0)
            time.sleep(plan.fault_s)
            _mirrors(ctx, False)
            window = (wall0, time.time())
            time.sleep(plan.after_s)
        finally:
            load = first.stop()
            if second is not None:
                other = second.stop()
                load = dataclasses.replace(load, acks=load.acks + other.acks, attempts=load.attempts + other.attempts,
                                           errors=load.errors + other.errors)
        notes["replicated_again"] = wait_replicated(s, list(s.regions), 120.0)
        end = wait_converged(s, folder, load, ctx.converge_timeout_s,
                             set_aside=lambda: _set_aside(ctx, load, old, new))
        notes["turns_set_aside"] = len(end.sessions.log_lost_turns)
        notes["set_aside_examples"] = end.sessions.log_lost_turns[:5]
        notes["turns_acked_by_old_after_cut"] = sum(1 for a in load.acks if a.region == old and a.acked_at > wall0)
        notes["turns_acked_by_old_after_promotion"] = sum(
            1 for a in load.acks if a.region == old and a.acked_at > promoted_at)
        _promote(ctx, old)  # the usual roles again
        return result_of(plan, 1, end, skips.total(), load, notes, window)

    def note(self, trials: Sequence[TrialResult]) -> str:
        aside = [t.notes.get("turns_set_aside", 0) for t in trials if "turns_set_aside" in t.notes]
        return (f"turns the cut-off region took after the promotion, set aside and listed: {sum(aside)} over "
                f"{len(aside)} trials; every region equal after the link healed") if aside else ""
