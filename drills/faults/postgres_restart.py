"""The source database crashes (SIGKILL of the postmaster and every backend) mid-stream and is
started again (crash recovery): Debezium's replication connection, the change agent's embedding
cache, the dialog stores and the active-region row all live in it, so every worker must ride
through the outage and lose nothing that was committed before it."""

from __future__ import annotations

from drills import inject
from drills.faults.context import FaultContext, SkipCounter
from drills.faults.model import TrialPlan
from drills.faults.plan import Timing
from drills.faults.scenario import LiveTrial


class PostgresRestart(LiveTrial):
    name = "postgres-restart"
    full_trials, quick_trials = 5, 1
    timing = Timing(fault_after=(2.0, 8.0), fault=(0.0, 5.0), after=(3.0, 6.0))
    summary = "the source database killed (SIGKILL, crash recovery) mid-stream and started again"

    def inject(self, ctx: FaultContext, plan: TrialPlan, skips: SkipCounter) -> int:
        inject.kill(ctx.settings, ["postgres"])
        return 1

    def repair(self, ctx: FaultContext, plan: TrialPlan) -> None:
        inject.restart(ctx.settings, ["postgres"])
