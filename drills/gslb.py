"""The global load balancer's health decision, as a pure state machine.

A GSLB probes every region's ``/readyz`` every interval and declares a region failed after a
number of misses in a row (the seed: every 10 s, 3 misses); a single good answer resets the
count. :class:`HealthState` is fed the probe results of one region in the order they were taken
and says when the region crossed the line, either way. No clock, no I/O: the prober
(drills/prober.py) supplies the results and their times.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum


@dataclass(frozen=True)
class ProbeResult:
    """One probe of one region: sent ``at``, answered (or given up) at ``done_at``, epoch seconds."""

    region: str
    at: float
    done_at: float
    ok: bool  # HTTP 200 from /readyz
    status: int | None  # HTTP status, None when nothing answered
    outcome: str  # "ready", "not_ready", "refused", "timeout"
    role: str | None = None  # the role /readyz stated


class Health(StrEnum):
    UP = "up"
    DOWN = "down"


@dataclass(frozen=True)
class Transition:
    """A region declared down (after ``misses`` in a row) or up again; ``at`` is when the deciding
    probe's result came in."""

    region: str
    health: Health
    at: float
    misses: int
    first_miss_at: float | None  # when the first probe of the run of misses was sent


class HealthState:
    def __init__(self, region: str, misses_to_fail: int) -> None:
        if misses_to_fail < 1:
            raise ValueError("misses_to_fail must be >= 1")
        self.region = region
        self.misses_to_fail = misses_to_fail
        self.health = Health.UP
        self.misses = 0
        self._first_miss_at: float | None = None

    def observe(self, result: ProbeResult) -> Transition | None:
        if result.region != self.region:
            raise ValueError(f"probe of {result.region} fed to the state of {self.region}")
        if result.ok:
            self.misses = 0
            self._first_miss_at = None
            if self.health is Health.DOWN:
                self.health = Health.UP
                return Transition(self.region, Health.UP, result.done_at, 0, None)
            return None
        self.misses += 1
        if self._first_miss_at is None:
            self._first_miss_at = result.at
        if self.health is Health.UP and self.misses >= self.misses_to_fail:
            self.health = Health.DOWN
            return Transition(self.region, Health.DOWN, result.done_at, self.misses, self._first_miss_at)
        return None


def replay(results: list[ProbeResult], misses_to_fail: int) -> list[Transition]:
    """Every transition a sequence of probe results (any regions, in time order) leads to."""
    states: dict[str, HealthState] = {}
    out: list[Transition] = []
    for r in sorted(results, key=lambda r: (r.done_at, r.at)):
        state = states.setdefault(r.region, HealthState(r.region, misses_to_fail))
        t = state.observe(r)
        if t is not None:
            out.append(t)
    return out
