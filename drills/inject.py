"""Process faults on the embedded stack: kill (SIGKILL), freeze (SIGSTOP), thaw (SIGCONT), restart.

The embedded stack remembers every process it starts by a pid file (``stack/procs.py``:
``STATE/run/NAME.pid``); Postgres, started by ``pg_ctl``, by its own ``postmaster.pid``. A fault
is aimed at those names: every process of a region (with ``Scope.REGION`` all it owns: object
store, Postgres, broker, Milvus, replicators into it, dialog worker, indexer, service, and Connect
and the change agent in the source region; with ``Scope.SERVICES`` its Milvus, indexer, dialog
worker and service) or one named process (``changes``, ``connect``, ``broker-east``,
``seaweed-north``, ``postgres-east``, ``mirror-east-north``, ``indexer-east``...). A signal goes to the named process and to every descendant of it, found in
``/proc``: a process group is not enough (Postgres' backends, uvicorn's threads are fine, but a
child that called setsid would be missed), and a freeze must stop them all, or a half-frozen
service could still answer.

Restarting goes through the same ``stack`` functions ``stack up`` uses, so a restarted
process is the one the stack would have started. A frozen process is killed before it is started
again (a stale copy thawed later would be a second writer).
"""

from __future__ import annotations

import logging
import os
import signal
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path

from drills.errors import BadInput
from regionsync.settings import Settings
from stack import milvus, postgres, procs, stack

log = logging.getLogger(__name__)


class Mode(StrEnum):
    KILL = "kill"  # SIGKILL: the process is gone, its sockets closed (connection refused)
    FREEZE = "freeze"  # SIGSTOP: the process hangs, its sockets stay open and answer nothing


class Scope(StrEnum):
    REGION = "region"  # everything the region owns: object store, Postgres, broker, Milvus, workers
    SERVICES = "services"  # only its Milvus and the workers that serve it (the shared-infra drill of before)


def region_workers(settings: Settings, region: str, scope: Scope = Scope.SERVICES) -> tuple[str, ...]:
    """Names of the processes of a region a fault of ``scope`` hits, in the order they are started
    again. With ``Scope.REGION`` that is everything the region owns (stack/stack.py),
    Connect and the change agent included when it is the source region."""
    if region not in settings.regions:
        raise BadInput(f"unknown region {region!r}; configured regions: {', '.join(settings.regions)}")
    if scope is Scope.REGION:
        return (*stack.region_infra(settings, region), *stack.region_workers(settings, region))
    return (milvus.proc_name(region), stack.indexer_name(region), stack.dialog_name(region), stack.service_name(region))


def shared_workers(settings: Settings) -> tuple[str, ...]:
    """Processes outside any region's services: every region's infrastructure and replicators,
    Connect and the change agent (each still lives in one region: see :func:`region_workers`)."""
    names: list[str] = []
    for region in settings.regions:
        names += [n for n in stack.region_infra(settings, region) if n != milvus.proc_name(region)]
    names += [stack.mirror_name(s, t) for s, t in settings.mirror_pairs()]
    names.append(stack.CHANGES)
    return tuple(dict.fromkeys(names))


@dataclass(frozen=True)
class Fault:
    """What was done to which processes, and when (epoch seconds)."""

    mode: str  # "kill", "freeze", "thaw", "restart"
    names: tuple[str, ...]
    pids: tuple[int, ...]  # every pid signalled (the named processes and their descendants)
    at: float
    done_at: float

    def to_dict(self) -> dict[str, object]:
        return {"mode": self.mode, "names": list(self.names), "pids": list(self.pids), "at": self.at,
                "done_at": self.done_at}


def main_pid(settings: Settings, name: str) -> int | None:
    """The pid of a named process of the stack if it is running."""
    kind, _, region = name.partition("-")
    if kind == "postgres" and region in settings.regions:
        return postgres.postmaster_pid(settings, region)
    proc = procs.read_proc(settings.state_dir, name)
    return proc.pid if proc is not None and proc.alive() else None


def descendants(pid: int, proc_root: Path = Path("/proc")) -> list[int]:
    """``pid`` and every process below it (children first found, breadth first)."""
    children: dict[int, list[int]] = {}
    for entry in proc_root.iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        ppid = parse_ppid(stat)
        if ppid is not None:
            children.setdefault(ppid, []).append(int(entry.name))
    out, todo = [], [pid]
    while todo:
        current = todo.pop(0)
        out.append(current)
        todo.extend(sorted(children.get(current, [])))
    return out


def parse_ppid(stat: str) -> int | None:
    """The parent pid from a ``/proc/PID/stat`` line (the command may hold spaces and parens)."""
    try:
        return int(stat.rsplit(")", 1)[1].split()[1])
    except (IndexError, ValueError):
        return None


def _pids_of(settings: Settings, names: Iterable[str]) -> list[int]:
    pids: list[int] = []
    for name in names:
        pid = main_pid(settings, name)
        if pid is None:
            log.warning("%s is not running: nothing to signal", name)
            continue
        pids.extend(p for p in descendants(pid) if p not in pids)
    return pids


def _signal(pids: Sequence[int], sig: int) -> None:
    for pid in pids:
        try:
            os.kill(pid, sig)
        except ProcessLookupError:
            pass


def _check_names(settings: Settings, names: Sequence[str]) -> None:
    known = set(shared_workers(settings)) | {n for r in settings.regions for n in region_workers(settings, r, Scope.REGION)}
    unknown = [n for n in names if n not in known]
    if unknown:
        raise BadInput(f"unknown process {', '.join(unknown)}; known: {', '.join(sorted(known))}")


def kill(settings: Settings, names: Sequence[str], clock: Callable[[], float] = time.time) -> Fault:
    """SIGKILL every named process and its descendants, and wait until they are gone."""
    _check_names(settings, names)
    at = clock()
    pids = _pids_of(settings, names)
    _signal(pids, signal.SIGKILL)
    deadline = time.monotonic() + 30
    while any(procs.pid_alive(p) for p in pids) and time.monotonic() < deadline:
        for p in pids:
            _reap(p)
        time.sleep(0.02)
    for name in names:  # `stack status` and a restart must see them as gone
        if not name.startswith("postgres-"):
            (procs.run_dir(settings.state_dir) / f"{name}.pid").unlink(missing_ok=True)
    log.info("killed %s (%d processes)", ", ".join(names), len(pids))
    return Fault(Mode.KILL.value, tuple(names), tuple(pids), at, clock())


def freeze(settings: Settings, names: Sequence[str], clock: Callable[[], float] = time.time) -> Fault:
    """SIGSTOP every named process and its descendants: they hang, their sockets stay open."""
    return _signal_all(settings, names, signal.SIGSTOP, Mode.FREEZE.value, "froze", clock)


def thaw(settings: Settings, names: Sequence[str], clock: Callable[[], float] = time.time) -> Fault:
    """SIGCONT every named process and its descendants (the end of a freeze)."""
    return _signal_all(settings, names, signal.SIGCONT, "thaw", "thawed", clock)


def _signal_all(settings: Settings, names: Sequence[str], sig: signal.Signals, mode: str, done: str,
                clock: Callable[[], float]) -> Fault:
    _check_names(settings, names)
    at = clock()
    pids = _pids_of(settings, names)
    _signal(pids, sig)
    log.info("%s %s (%d processes)", done, ", ".join(names), len(pids))
    return Fault(mode, tuple(names), tuple(pids), at, clock())


def restart(settings: Settings, names: Sequence[str], clock: Callable[[], float] = time.time) -> Fault:
    """Start the named processes again through stack, in the given order; one still
    running (e.g. frozen) is killed first. Returns when each answers as ``stack up`` waits for it."""
    _check_names(settings, names)
    at = clock()
    running = [n for n in names if main_pid(settings, n) is not None]
    if running:
        kill(settings, running, clock)
    services = []
    for name in names:
        if name.startswith("serve-"):
            # Started together and waited for at the end: a service waits for its region's parts.
            services.append(stack.start_service(settings, name.removeprefix("serve-"), wait=False))
        else:
            stack.starter(settings, name)()
    for proc in services:
        stack.wait_service(settings, proc.name.removeprefix("serve-"), proc)
    return Fault("restart", tuple(names), (), at, clock())


def fail_region(settings: Settings, region: str, mode: Mode, clock: Callable[[], float] = time.time,
                scope: Scope = Scope.SERVICES) -> Fault:
    names = region_workers(settings, region, scope)
    return kill(settings, names, clock) if mode is Mode.KILL else freeze(settings, names, clock)


def restart_region(settings: Settings, region: str, clock: Callable[[], float] = time.time,
                   scope: Scope = Scope.SERVICES) -> Fault:
    return restart(settings, region_workers(settings, region, scope), clock)


def _reap(pid: int) -> None:
    try:
        os.waitpid(pid, os.WNOHANG)
    except ChildProcessError:
        pass
