"""The per-phase CPU accounting: the pure arithmetic, and a real reading of this process."""

from __future__ import annotations

import os
import time

from bench.cpu import CpuMeter, machine_busy_s, phase_figures, process_cpu_s
from bench.report import cpu_lines


def test_phase_figures_are_differences_sorted_by_cpu_and_other_load_is_the_rest():
    figures = phase_figures({"a": 1.0, "b": 5.0, "gone": 1.0}, {"a": 4.0, "b": 6.0, "new": 3.0}, 10.0, 9.0)
    assert list(figures["services_cpu_s"]) == ["a", "b"]  # a service missing at either end is left out
    assert figures["services_cpu_s"] == {"a": 3.0, "b": 1.0}
    assert figures["stack_cpu_s"] == 4.0 and figures["other_cpu_s"] == 5.0


def test_a_busy_loop_shows_in_its_own_process_and_the_machine():
    meter = CpuMeter(lambda: {"me": os.getpid(), "nobody": 2**22 + 7})
    with meter.phase("spin"):
        end = time.process_time() + 0.3
        while time.process_time() < end:
            pass
    ph = meter.phases["spin"]
    assert "nobody" not in ph["services_cpu_s"]
    assert ph["services_cpu_s"]["me"] >= 0.25
    assert ph["machine_cpu_s"] >= 0.25
    assert process_cpu_s(2**22 + 7) is None and machine_busy_s() > 0
    (line,) = cpu_lines({"cpu": meter.phases})
    assert line.startswith("cpu, spin (") and "me " in line
