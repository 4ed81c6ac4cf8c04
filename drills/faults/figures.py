"""The figures of a scenario, from its trials: pure arithmetic on plain data."""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

from drills.faults.model import TrialResult


def percentile(values: Sequence[float], q: float) -> float | None:
    """The ``q``-th percentile (0..100) by linear interpolation between the closest ranks."""
    if not values:
        return None
    data = sorted(values)
    pos = (len(data) - 1) * q / 100.0
    lo, hi = math.floor(pos), math.ceil(pos)
    return data[lo] + (data[hi] - data[lo]) * (pos - lo)


def histogram_quantile(q: float, buckets: Mapping[float, float]) -> float | None:
    """Prometheus' ``histogram_quantile``: ``buckets`` maps each upper bound (``le``, +Inf
    included) to its cumulative count. Linear inside the bucket the quantile falls in; a quantile
    in the +Inf bucket is the highest finite bound (what Prometheus answers). None: no samples."""
    bounds = sorted(buckets)
    if not bounds or buckets[bounds[-1]] <= 0:
        return None
    total = buckets[bounds[-1]]
    rank = q * total
    prev_bound, prev_count = 0.0, 0.0
    for bound in bounds:
        count = buckets[bound]
        if count >= rank:
            if math.isinf(bound):
                return prev_bound
            if count == prev_count:
                return bound
            return prev_bound + (bound - prev_bound) * (rank - prev_count) / (count - prev_count)
        prev_bound, prev_count = bound, count
    return prev_bound


def bucket_delta(after: Mapping[float, float], before: Mapping[float, float]) -> dict[float, float]:
    """Cumulative bucket counts observed between two scrapes of one histogram (a process that
    restarted in between starts from zero: then ``after`` alone is the delta)."""
    if any(after.get(b, 0.0) < c for b, c in before.items()):
        return dict(after)
    return {b: c - before.get(b, 0.0) for b, c in after.items()}


def summarise(name: str, trials: Sequence[TrialResult]) -> dict[str, Any]:
    """One row of the table: sums over the trials, time to converge as median and maximum, the
    dialog's availability during the faults (turns/s during / before) as minimum and median."""
    converged = [t.converge_s for t in trials if t.converge_s is not None]
    available = [t.availability for t in trials if t.availability is not None]
    not_converged = sum(1 for t in trials if t.converge_s is None and t.error is None)
    errors = [t.error for t in trials if t.error]
    lost = sum(t.lost for t in trials)
    stale = sum(t.stale for t in trials)
    problems = [p for t in trials for p in t.problems]
    return {
        "scenario": name,
        "trials": len(trials),
        "faults": sum(t.faults for t in trials),
        "lost": lost,
        "stale": stale,
        "duplicates": sum(t.duplicates for t in trials),
        "converge_p50_s": _round(percentile(converged, 50)),
        "converge_max_s": _round(max(converged) if converged else None),
        "not_converged": not_converged,
        "availability_min": _round(min(available) if available else None),
        "availability_p50": _round(percentile(available, 50)),
        "errors": len(errors),
        "error_examples": errors[:3],
        "problems": len(problems),
        "problem_examples": problems[:3],
        "ok": bool(trials) and lost == 0 and stale == 0 and not_converged == 0 and not errors and not problems,
    }


def _round(value: float | None) -> float | None:
    return None if value is None else round(value, 2)
