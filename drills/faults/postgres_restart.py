"""A region's database crashes (SIGKILL of the postmaster and every backend) mid-stream and is
started again (crash recovery). In the source region Debezium's replication connection, the CMS,
the change agent's embedding cache, the region's dialog store, role and replicator checkpoints
live in it; in another region its dialog store, role and checkpoints: every worker must ride
through the outage and lose nothing that was committed before it."""

from __future__ import annotations

from collections.abc import Sequence

from drills import inject
from drills.faults.context import FaultContext, SkipCounter
from drills.faults.model import TrialPlan
from drills.faults.plan import Timing
from drills.faults.scenario import LiveTrial
from stack import postgres


class PostgresRestart(LiveTrial):
    name = "postgres-restart"
    full_trials, quick_trials = 5, 1
    timing = Timing(fault_after=(2.0, 8.0), fault=(0.0, 5.0), after=(3.0, 6.0))
    summary = "a region's database (the source's: the CMS too) killed (SIGKILL, crash recovery) mid-stream, restarted"

    def targets(self, ctx: FaultContext) -> Sequence[str]:
        return [postgres.proc_name(r) for r in ctx.settings.regions]

    def inject(self, ctx: FaultContext, plan: TrialPlan, skips: SkipCounter) -> int:
        inject.kill(ctx.settings, [plan.target])
        return 1

    def repair(self, ctx: FaultContext, plan: TrialPlan) -> None:
        inject.restart(ctx.settings, [plan.target])
