"""The captured table's schema changes mid-stream: a column is added (with a default, while rows
are being written), then dropped again, under load. Debezium sees new relation metadata each
time; the change agent reads only the configured columns, so the pipeline must go on and every
region still equal the table at the end."""

from __future__ import annotations

from typing import Any

import psycopg
from psycopg import sql

from drills.faults.checks import EndState
from drills.faults.context import FaultContext, SkipCounter
from drills.faults.model import TrialPlan
from drills.faults.plan import Timing
from drills.faults.scenario import LiveTrial


class SchemaChange(LiveTrial):
    name = "schema-change"
    full_trials, quick_trials = 3, 1
    timing = Timing(fault_after=(2.0, 6.0), fault=(2.0, 6.0), after=(2.0, 4.0))
    summary = "a column added to the captured table mid-stream, then one dropped, under load"

    def _column(self, plan: TrialPlan) -> str:
        return f"faults_extra_{plan.index}"

    def _alter(self, ctx: FaultContext, statement: sql.Composed) -> None:
        with psycopg.connect(ctx.settings.pg_dsn(), autocommit=True) as conn:
            conn.execute("SET lock_timeout = '10s'")
            conn.execute(statement)

    def _table(self, ctx: FaultContext) -> sql.Identifier:
        return sql.Identifier(*ctx.settings.capture_table.split("."))

    def inject(self, ctx: FaultContext, plan: TrialPlan, skips: SkipCounter) -> int:
        self._alter(ctx, sql.SQL("ALTER TABLE {} ADD COLUMN {} text NOT NULL DEFAULT 'added mid-stream'").format(
            self._table(ctx), sql.Identifier(self._column(plan))))
        return 2  # the add, and the drop that repair() makes

    def repair(self, ctx: FaultContext, plan: TrialPlan) -> None:
        self._alter(ctx, sql.SQL("ALTER TABLE {} DROP COLUMN {}").format(
            self._table(ctx), sql.Identifier(self._column(plan))))

    def finish(self, ctx: FaultContext, plan: TrialPlan, seen: dict[str, dict[str, Any]], end: EndState) -> dict[str, Any]:
        return {"added_then_dropped": self._column(plan), "faults": "add + drop"}
