"""CPU seconds per service per phase: where a phase's work goes, for every process of the stack.

py-spy (``--profile``) sees inside the Python processes only; a phase that leaves them idle (the
title/tags row once did) spends its time in Java (Connect + Debezium), C++ (the regions' Milvus),
Rust (the broker) or Postgres. The kernel's accounting covers them all: ``utime + stime`` from
``/proc/PID/stat``, plus ``cutime + cstime`` (children it has reaped: Postgres backends that
ended during the phase). The machine's own busy time (``/proc/stat``) beside the stack's sum says
how much of the 2 cores went to other work during the phase (a shared machine's load).
Always on: reading a few files at each phase's start and end costs nothing measurable.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import Any

TICK = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100


def process_cpu_s(pid: int) -> float | None:
    """CPU seconds of ``pid`` and the children it has reaped, or None if it is gone."""
    try:
        text = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    # The command name (field 2) may hold spaces and parentheses: split after its last ')'.
    fields = text[text.rfind(")") + 2:].split()
    utime, stime, cutime, cstime = (int(f) for f in fields[11:15])
    return (utime + stime + cutime + cstime) / TICK


def machine_busy_s() -> float:
    """Busy CPU seconds of the whole machine since boot (all cores; idle and iowait excluded)."""
    first = Path("/proc/stat").read_text().splitlines()[0].split()
    values = [int(v) for v in first[1:]]
    idle = values[3] + (values[4] if len(values) > 4 else 0)
    # guest time is already counted in user: the first eight fields are the whole.
    return (sum(values[:8]) - idle) / TICK


def phase_figures(before: Mapping[str, float], after: Mapping[str, float], seconds: float,
                  machine_s: float) -> dict[str, Any]:
    """Per-service CPU seconds of one phase (pure: start and end readings in, figures out)."""
    services = {name: round(after[name] - before[name], 2) for name in after if name in before}
    stack = sum(services.values())
    return {
        "seconds": round(seconds, 2),
        "services_cpu_s": dict(sorted(services.items(), key=lambda kv: -kv[1])),
        "stack_cpu_s": round(stack, 2),
        "machine_cpu_s": round(machine_s, 2),
        # Work on the machine that was neither the stack nor accounted to it: other users' load,
        # and the bench's own driver (also listed as "bench" when given).
        "other_cpu_s": round(max(0.0, machine_s - stack), 2),
    }


class CpuMeter:
    """``with meter.phase("name"):`` records the phase's CPU seconds per service in ``phases``."""

    def __init__(self, pids: Callable[[], Mapping[str, int]]) -> None:
        self.pids = pids
        self.phases: dict[str, dict[str, Any]] = {}

    def _read(self) -> dict[str, float]:
        out: dict[str, float] = {}
        for name, pid in self.pids().items():
            cpu = process_cpu_s(pid)
            if cpu is not None:
                out[name] = cpu
        return out

    @contextmanager
    def phase(self, name: str) -> Iterator[None]:
        before, machine_before, started = self._read(), machine_busy_s(), time.monotonic()
        try:
            yield
        finally:
            self.phases[name] = phase_figures(before, self._read(), time.monotonic() - started,
                                              machine_busy_s() - machine_before)
