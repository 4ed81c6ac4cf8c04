"""Trial plans: when each fault strikes, how long it lasts, and what it hits, drawn from a seed.

Pure: the same seed, scenario and count give the same plans, so a run that found something can be
run again at the same moments (``regionsync faults --seed N --scenario X``).
"""

from __future__ import annotations

import random
import zlib
from collections.abc import Sequence
from dataclasses import dataclass

from drills.faults.model import TrialPlan


@dataclass(frozen=True)
class Timing:
    """Ranges (seconds) a scenario's trials draw from."""

    fault_after: tuple[float, float] = (2.0, 8.0)
    fault: tuple[float, float] = (0.0, 3.0)
    after: tuple[float, float] = (1.0, 3.0)


def scenario_seed(seed: int, scenario: str) -> int:
    """Each scenario's own stream of numbers: adding a scenario does not move another's moments."""
    return seed * 1_000_003 + zlib.crc32(scenario.encode())


def plan_trials(scenario: str, trials: int, seed: int, timing: Timing, targets: Sequence[str] = ()) -> list[TrialPlan]:
    rng = random.Random(scenario_seed(seed, scenario))
    plans = []
    for i in range(trials):
        plans.append(
            TrialPlan(
                scenario=scenario,
                index=i,
                seed=rng.randrange(2**31),
                fault_after_s=round(rng.uniform(*timing.fault_after), 3),
                fault_s=round(rng.uniform(*timing.fault), 3),
                after_s=round(rng.uniform(*timing.after), 3),
                target=rng.choice(list(targets)) if targets else "",
            )
        )
    return plans
