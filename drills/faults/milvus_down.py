"""One region's Milvus stopped for a minute under load: the other region must stay fresh (its
freshness p99 over the outage is measured from its indexer's histogram), the stopped one's
indexer holds its batch without committing, and catches up when Milvus is back."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from drills.faults.checks import EndState
from drills.faults.context import FaultContext, SkipCounter
from drills.faults.figures import bucket_delta, histogram_quantile
from drills.faults.model import TrialPlan, TrialResult
from drills.faults.plan import Timing
from drills.faults.scenario import LiveTrial
from stack import milvus


class MilvusDown(LiveTrial):
    name = "milvus-down"
    full_trials, quick_trials = 3, 1
    timing = Timing(fault_after=(3.0, 8.0), fault=(60.0, 60.0), after=(2.0, 4.0))
    quick_timing = Timing(fault_after=(2.0, 4.0), fault=(10.0, 10.0), after=(1.0, 2.0))
    summary = "one region's Milvus stopped for 60 s under load; the other's freshness p99 meanwhile; catch-up"

    def targets(self, ctx: FaultContext) -> Sequence[str]:
        return list(ctx.settings.regions)

    def _other(self, ctx: FaultContext, region: str) -> str:
        return next(r for r in ctx.settings.regions if r != region)

    def observe(self, ctx: FaultContext, plan: TrialPlan, phase: str) -> dict[str, Any]:
        return {"buckets": ctx.freshness_buckets(self._other(ctx, plan.target))}

    def inject(self, ctx: FaultContext, plan: TrialPlan, skips: SkipCounter) -> int:
        milvus.stop(ctx.settings, plan.target)
        return 1

    def repair(self, ctx: FaultContext, plan: TrialPlan) -> None:
        milvus.start(ctx.settings, plan.target)

    def finish(self, ctx: FaultContext, plan: TrialPlan, seen: dict[str, dict[str, Any]], end: EndState) -> dict[str, Any]:
        delta = bucket_delta(seen["repaired"]["buckets"], seen["fault"]["buckets"])
        total = max(delta.values(), default=0.0)
        p99 = histogram_quantile(0.99, delta)
        return {
            "stopped": plan.target,
            "other": self._other(ctx, plan.target),
            "other_applied_during_outage": int(total),
            "other_freshness_p99_s": None if p99 is None else round(p99, 3),
            "other_freshness_p50_s": None if p99 is None else round(histogram_quantile(0.5, delta) or 0.0, 3),
        }

    def note(self, trials: Sequence[TrialResult]) -> str:
        parts = []
        for t in trials:
            n = t.notes
            if "other_freshness_p99_s" not in n:
                continue
            p99 = n["other_freshness_p99_s"]
            parts.append(
                f"{n['stopped']} down {n.get('fault_seconds', 0):.0f}s: {n['other']} p99 "
                + ("-" if p99 is None else f"{p99:.2f}s")
                + f" over {n['other_applied_during_outage']} records"
            )
        return "; ".join(parts) + " (freshness: source commit -> applied, indexer histogram)"
