"""A scenario: a fault, how often, when, and what it measures. Most share one trial shape
(:class:`LiveTrial`): start the workload, wait, inject, wait, repair, let the load run a little
longer, stop it, and wait until every region equals the source and every session the log."""

from __future__ import annotations

import logging
import time
from abc import ABC, abstractmethod
from collections.abc import Sequence
from typing import Any

from drills.faults.availability import availability
from drills.faults.checks import EndState, LogFolder, wait_converged
from drills.faults.context import FaultContext, SkipCounter, wait
from drills.faults.model import TrialPlan, TrialResult
from drills.faults.plan import Timing
from drills.workload_model import WorkloadResult

log = logging.getLogger(__name__)


class Scenario(ABC):
    name: str = ""
    full_trials: int = 1
    quick_trials: int = 1
    timing: Timing = Timing()
    quick_timing: Timing | None = None  # shorter faults in quick mode (e.g. a 10 s Milvus outage)
    summary: str = ""  # one line for --help and the README
    quick: bool = False  # set by the runner for a quick run (smaller storms, shorter outages)

    def targets(self, ctx: FaultContext) -> Sequence[str]:
        """What a trial may hit (one is drawn per trial); empty: the scenario has one target."""
        return ()

    @abstractmethod
    def run_trial(self, ctx: FaultContext, plan: TrialPlan, folder: LogFolder) -> TrialResult: ...

    def note(self, trials: Sequence[TrialResult]) -> str:
        """The notes column of the table, from this scenario's trials."""
        return ""


def result_of(plan: TrialPlan, faults: int, end: EndState, duplicates: int, load: WorkloadResult | None,
              notes: dict[str, Any] | None = None, fault_window: tuple[float, float] | None = None) -> TrialResult:
    """The trial's figures. ``fault_window``: when the fault began and its repair ended, on the
    workload's clock (wall time), for the availability of the dialog (availability.py)."""
    notes = dict(notes or {})
    ratio = None
    if load is not None:
        notes.setdefault("doc_changes", len(load.doc_changes))
        notes.setdefault("turns_acked", len(load.acks))
        if load.errors:
            notes["workload_errors"] = list(load.errors[:5])
        if fault_window is not None:
            # Customers start within one think time of the load's start: count from then on.
            earliest = load.started_at + load.config.think_s
            seen = availability([a.acked_at for a in load.acks], fault_window[0], fault_window[1], earliest)
            notes["availability"] = seen.to_dict()
            ratio = None if seen.ratio is None else round(seen.ratio, 3)
    problems = [f"{region_session} differs from the fold of the log" for region_session in end.sessions.differing]
    if not end.sessions.caught_up:
        problems.append("a region's dialog store did not reach the end of the log")
    return TrialResult(
        plan, faults, len(end.lost), end.stale_count, duplicates, round(end.seconds, 2) if end.converged else None,
        tuple(end.lost), tuple(end.stale_docs), notes, problems=tuple(problems), availability=ratio,
    )


class LiveTrial(Scenario):
    """The common shape. Subclasses say what the fault is and how it is repaired."""

    @abstractmethod
    def inject(self, ctx: FaultContext, plan: TrialPlan, skips: SkipCounter) -> int:
        """Cause the fault; return how many faults were injected."""

    @abstractmethod
    def repair(self, ctx: FaultContext, plan: TrialPlan) -> None:
        """End the fault (start the process again, ...). Returns when it was started."""

    def observe(self, ctx: FaultContext, plan: TrialPlan, phase: str) -> dict[str, Any]:
        """Figures taken at "fault" (just before inject) and "repaired" (just after repair)."""
        return {}

    def finish(self, ctx: FaultContext, plan: TrialPlan, seen: dict[str, dict[str, Any]], end: EndState) -> dict[str, Any]:
        """Scenario figures for the trial's notes, from what :meth:`observe` saw."""
        return {}

    def run_trial(self, ctx: FaultContext, plan: TrialPlan, folder: LogFolder) -> TrialResult:
        skips = SkipCounter(ctx)
        workload = ctx.workload(plan.seed, run_id=f"{plan.scenario}-{plan.index}-{plan.seed % 10_000}")
        seen: dict[str, dict[str, Any]] = {}
        load: WorkloadResult | None = None
        try:
            wait(plan.fault_after_s)
            seen["fault"] = self.observe(ctx, plan, "fault")
            t0, wall0 = time.monotonic(), time.time()  # wall time: the workload's clock
            faults = self.inject(ctx, plan, skips)
            wait(plan.fault_s)
            self.repair(ctx, plan)
            window = (wall0, time.time())
            seen["repaired"] = self.observe(ctx, plan, "repaired")
            seen["repaired"]["fault_seconds"] = round(time.monotonic() - t0, 2)
            wait(plan.after_s)
        finally:
            load = workload.stop()
        end = wait_converged(ctx.settings, folder, load, ctx.converge_timeout_s)
        notes = self.finish(ctx, plan, seen, end)
        notes["fault_seconds"] = seen["repaired"]["fault_seconds"]
        return result_of(plan, faults, end, skips.total(), load, notes, window)
