"""SIGKILL of one worker at a random moment under load, then a restart: the change agent, a
region's indexer, a region's dialog worker, or the Kafka Connect worker (Debezium then redelivers
from its last committed offsets: the duplicates are counted on the topic and must be absorbed).

Each is a crash at an arbitrary point of the worker's loop (mid-batch, between the output and the
commit, inside a store transaction): the pipeline's at-least-once delivery plus the regions'
version guards and the dialog store's positions-in-the-same-transaction must lose nothing."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from drills import inject
from drills.faults.checks import EndState
from drills.faults.context import FaultContext, SkipCounter
from drills.faults.model import TrialPlan, TrialResult
from drills.faults.plan import Timing
from drills.faults.scenario import LiveTrial
from drills.faults.topics import TopicMark, duplicate_events
from stack import connect, stack


class KillWorker(LiveTrial):
    kind = ""  # "changes" | "indexer" | "dialog" | "connect"

    def targets(self, ctx: FaultContext) -> Sequence[str]:
        if self.kind == "indexer":
            return [stack.indexer_name(r) for r in ctx.settings.regions]
        if self.kind == "dialog":
            return [stack.dialog_name(r) for r in ctx.settings.regions]
        return [self.kind]

    def inject(self, ctx: FaultContext, plan: TrialPlan, skips: SkipCounter) -> int:
        if self.kind == "indexer":
            skips.before_restart([plan.target.removeprefix("indexer-")])
        inject.kill(ctx.settings, [plan.target])
        return 1

    def repair(self, ctx: FaultContext, plan: TrialPlan) -> None:
        inject.restart(ctx.settings, [plan.target])


class AgentKill(KillWorker):
    name, kind = "agent-kill", stack.CHANGES
    full_trials, quick_trials = 20, 1
    summary = "SIGKILL of the change agent (Faust) mid-stream, restart"


class IndexerKill(KillWorker):
    name, kind = "indexer-kill", "indexer"
    full_trials, quick_trials = 20, 1
    summary = "SIGKILL of one region's indexer mid-stream, restart"


class DialogKill(KillWorker):
    name, kind = "dialog-kill", "dialog"
    full_trials, quick_trials = 20, 1
    summary = "SIGKILL of one region's dialog worker mid-stream, restart"


class ConnectKill(KillWorker):
    name, kind = "connect-kill", connect.NAME
    full_trials, quick_trials = 10, 1
    timing = Timing(fault_after=(2.0, 8.0), fault=(0.0, 3.0), after=(3.0, 6.0))
    summary = "SIGKILL of the Kafka Connect worker (Debezium) mid-stream, restart; redeliveries counted"

    def observe(self, ctx: FaultContext, plan: TrialPlan, phase: str) -> dict[str, Any]:
        if phase == "fault":
            return {"mark": TopicMark.now(ctx.settings, ctx.settings.cdc_topic)}
        return {}

    def repair(self, ctx: FaultContext, plan: TrialPlan) -> None:
        super().repair(ctx, plan)
        # The connector and its task come back from the worker's config topic by themselves;
        # waiting for the task here makes the restart's cost part of the fault, not the convergence.
        from connectors.client import ConnectClient

        ConnectClient(ctx.settings.connect_url).wait_running(ctx.settings.connector_name, timeout=180)

    def finish(self, ctx: FaultContext, plan: TrialPlan, seen: dict[str, dict[str, Any]], end: EndState) -> dict[str, Any]:
        redelivered = duplicate_events(ctx.settings, seen["fault"]["mark"])
        return {"debezium_redelivered": redelivered}

    def note(self, trials: Sequence[TrialResult]) -> str:
        total = sum(int(t.notes.get("debezium_redelivered", 0)) for t in trials)
        return f"Debezium redelivered {total} change events after the kills; all absorbed by the version guards"


SCENARIOS = (AgentKill, IndexerKill, DialogKill, ConnectKill)
