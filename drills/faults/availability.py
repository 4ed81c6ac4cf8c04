"""Did the dialog stay available through the fault? Turns acknowledged per second during the
fault window against an equal window just before it: pure arithmetic on the workload's record.

The fault window runs from the injection to the end of the repair (the process started again,
Milvus answering again). The window before it has the same length, ending where the fault
begins, clipped to the time the workload's customers were all talking (``earliest``): a fault
that strikes a few seconds into the load (a 60 s Milvus outage after 3 s) is compared with the
rate of those few seconds. A ratio of 1.0 means turns went on as before; 0.1 means nine turns in
ten were not acknowledged while the fault lasted (customers wait and retry the same turn, so a
stalled region shows as fewer acknowledgements, not as errors).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import asdict, dataclass
from typing import Any


@dataclass(frozen=True)
class Availability:
    turns_before: int
    seconds_before: float
    turns_during: int
    seconds_during: float

    @property
    def rate_before(self) -> float | None:
        return self.turns_before / self.seconds_before if self.seconds_before > 0 else None

    @property
    def rate_during(self) -> float | None:
        return self.turns_during / self.seconds_during if self.seconds_during > 0 else None

    @property
    def ratio(self) -> float | None:
        """Turns/s during the fault over turns/s before it; None when either window is empty
        (no time before the fault, an instant fault) or nothing was acknowledged before it."""
        before, during = self.rate_before, self.rate_during
        if before is None or during is None or before <= 0:
            return None
        return during / before

    def to_dict(self) -> dict[str, Any]:
        out = asdict(self)
        out["seconds_before"] = round(self.seconds_before, 2)
        out["seconds_during"] = round(self.seconds_during, 2)
        ratio = self.ratio
        out["ratio"] = None if ratio is None else round(ratio, 3)
        return out


def availability(acked_at: Iterable[float], fault_start: float, fault_end: float, earliest: float) -> Availability:
    """Acknowledgement times (``acked_at``, the workload's clock) counted in
    ``[fault_start, fault_end)`` and in the window of the same length before ``fault_start``
    (not before ``earliest``)."""
    length = max(0.0, fault_end - fault_start)
    before_start = min(fault_start, max(earliest, fault_start - length))
    times = list(acked_at)
    during = sum(1 for t in times if fault_start <= t < fault_end)
    before = sum(1 for t in times if before_start <= t < fault_start)
    return Availability(before, fault_start - before_start, during, length)
