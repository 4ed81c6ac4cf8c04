"""Peak memory of every process of the stack, sampled while the bench runs.

A *service* is a process the stack started (pid file ``STATE/run/NAME.pid``, or a region's
Postgres' ``postmaster.pid``) together with all its descendants. Its peak is

* for a service that is one process: the kernel's own high-water mark ``VmHWM``
  (``/proc/PID/status``), which is exact whatever the sampling interval;
* for a service of several processes (Postgres: the postmaster and one backend per connection):
  the highest *sum of PSS* (``/proc/PID/smaps_rollup``) seen over the samples. PSS splits each
  shared page between the processes that map it, so Postgres' shared buffers count once, not
  once per backend (a sum of RSS would count them a dozen times). A sampled peak can miss a spike
  shorter than the interval.

The total is the sum of the services' peaks: an upper bound of the stack's peak, since the peaks
need not coincide. The bench driver (this process, which runs the model for the embedding limit
and the peer) is reported apart: it is not part of the stack.
"""

from __future__ import annotations

import logging
import os
import threading
from dataclasses import dataclass, field
from pathlib import Path

log = logging.getLogger(__name__)

KB = 1024


@dataclass
class ServicePeak:
    name: str
    pid: int
    peak_bytes: int = 0
    processes: int = 1  # most processes seen in the service's tree at once
    how: str = "VmHWM"  # "VmHWM" (one process) or "sum of PSS" (several)


def _status_kb(pid: int, key: str) -> int | None:
    try:
        with open(f"/proc/{pid}/status") as fh:
            for line in fh:
                if line.startswith(key + ":"):
                    return int(line.split()[1])
    except (OSError, ValueError, IndexError):
        return None
    return None


def _pss_kb(pid: int) -> int | None:
    try:
        with open(f"/proc/{pid}/smaps_rollup") as fh:
            for line in fh:
                if line.startswith("Pss:"):
                    return int(line.split()[1])
    except (OSError, ValueError, IndexError):
        return None
    return None


def vm_hwm_bytes(pid: int) -> int | None:
    kb = _status_kb(pid, "VmHWM")
    return None if kb is None else kb * KB


def _children_map() -> dict[int, list[int]]:
    children: dict[int, list[int]] = {}
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit():
            continue
        try:
            with open(f"/proc/{entry.name}/stat") as fh:
                stat = fh.read()
        except OSError:
            continue
        # The command name (field 2) may contain spaces and parentheses: split after its last ")".
        fields = stat.rsplit(")", 1)[-1].split()
        if len(fields) > 1:
            children.setdefault(int(fields[1]), []).append(int(entry.name))
    return children


def _tree(root: int, children: dict[int, list[int]]) -> list[int]:
    out, todo = [], [root]
    while todo:
        pid = todo.pop()
        out.append(pid)
        todo.extend(children.get(pid, ()))
    return out


def stack_pids(state_dir: Path) -> dict[str, int]:
    """Name -> pid of every service of the embedded stack in ``state_dir`` (running or not)."""
    out: dict[str, int] = {}
    run = state_dir / "run"
    for pid_file in sorted(run.glob("*.pid")) if run.exists() else []:
        try:
            out[pid_file.stem] = int(pid_file.read_text().strip())
        except (OSError, ValueError):
            continue
    # Each region's Postgres runs under pg_ctl: its postmaster's pid is in its data dir
    # (stack/postgres.py: STATE/pg/<region>), named as the stack names it.
    pg = state_dir / "pg"
    for lock in sorted(pg.glob("*/postmaster.pid")) if pg.exists() else []:
        try:
            out[f"postgres-{lock.parent.name}"] = int(lock.read_text().split()[0])
        except (OSError, ValueError, IndexError):
            continue
    return out


@dataclass
class RssSampler:
    """Samples the stack's services every ``interval_s`` in a background thread; services that
    appear later (workers started after the infrastructure) are picked up as they come."""

    state_dir: Path
    interval_s: float = 1.0
    peaks: dict[str, ServicePeak] = field(default_factory=dict)
    _stop: threading.Event = field(default_factory=threading.Event)
    _thread: threading.Thread | None = None
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def start(self) -> RssSampler:
        self._thread = threading.Thread(target=self._run, name="bench-rss", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> dict[str, ServicePeak]:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(10)
        self.sample()
        return self.peaks

    def _run(self) -> None:
        while not self._stop.wait(self.interval_s):
            try:
                self.sample()
            except Exception:  # noqa: BLE001 - a failed sample must not end the bench
                log.debug("rss sample failed", exc_info=True)

    def sample(self) -> None:
        pids = stack_pids(self.state_dir)
        children = _children_map()
        with self._lock:
            for name, root in pids.items():
                tree = [p for p in _tree(root, children) if os.path.exists(f"/proc/{p}")]
                if not tree:
                    continue
                peak = self.peaks.get(name)
                if peak is None or peak.pid != root:
                    # A restarted service is a new process: keep the higher of the two peaks.
                    old = peak.peak_bytes if peak else 0
                    peak = self.peaks[name] = ServicePeak(name, root, old)
                if len(tree) == 1:
                    value = vm_hwm_bytes(root)
                else:
                    pss = [_pss_kb(p) for p in tree]
                    value = sum(v for v in pss if v) * KB
                    peak.how = "sum of PSS"
                peak.processes = max(peak.processes, len(tree))
                if value:
                    peak.peak_bytes = max(peak.peak_bytes, value)


def self_peak_bytes() -> int:
    return vm_hwm_bytes(os.getpid()) or 0
