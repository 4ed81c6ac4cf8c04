"""What a trial is asked to do and what it found: plain frozen data, JSON in and out."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any


@dataclass(frozen=True)
class TrialPlan:
    """One trial, drawn from the suite's seed (plan.py). Times are seconds of live workload."""

    scenario: str
    index: int
    seed: int
    fault_after_s: float  # workload time before the fault
    fault_s: float  # how long the fault lasts before it is repaired (process down, Milvus stopped...)
    after_s: float  # workload time after the repair, before the load stops
    target: str = ""  # which process or region, where the scenario picks one

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class TrialResult:
    """What one trial found. ``lost``: acknowledged events whose effect is missing at the end: a
    committed document version a region never applied, nor any later version of the document
    (counted per region and version: checks.lost_versions), a turn a region acknowledged that is
    not in the log or in a region; ``stale``: documents that differ from the source in some region
    at the end; ``duplicates``: records the regions' version guards refused (redeliveries
    absorbed); ``converge_s``: from the end of the load until every region equalled the source,
    every session the log, and every region applied every committed version (None: not within
    the timeout);
    ``availability``: dialog turns acknowledged per second during the fault over the rate in an
    equal window before it (availability.py; None: no fault window or no turn before it)."""

    plan: TrialPlan
    faults: int
    lost: int
    stale: int
    duplicates: int
    converge_s: float | None
    lost_detail: tuple[str, ...] = ()
    stale_detail: tuple[str, ...] = ()
    notes: dict[str, Any] = field(default_factory=dict)
    error: str | None = None  # the trial could not run to its end (the suite goes on)
    # Checks that failed besides loss and staleness: a crash, a dead letter with a wrong reason, a
    # region's session that differs from the log, a leaked secret...
    problems: tuple[str, ...] = ()
    availability: float | None = None

    def to_dict(self) -> dict[str, Any]:
        out = asdict(self)
        out["lost_detail"] = list(self.lost_detail[:50])
        out["stale_detail"] = list(self.stale_detail[:50])
        out["problems"] = list(self.problems[:50])
        return out

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> TrialResult:
        return cls(
            TrialPlan(**data["plan"]), int(data["faults"]), int(data["lost"]), int(data["stale"]),
            int(data["duplicates"]), data.get("converge_s"), tuple(data.get("lost_detail") or ()),
            tuple(data.get("stale_detail") or ()), dict(data.get("notes") or {}), data.get("error"),
            tuple(data.get("problems") or ()), data.get("availability"),
        )
