"""Daemon processes of the embedded stack: start detached, remember by pid file, stop, probe.

Every service of the embedded stack (broker, Connect worker, Milvus per region, stream workers)
is a child process started with :func:`spawn`. Its pid lives in ``STATE/run/NAME.pid`` and its
output in ``STATE/logs/NAME.log`` so that ``regionsync stack down`` from another shell can stop
it, and a test can ``kill -9`` it and start it again.
"""

from __future__ import annotations

import logging
import os
import random
import signal
import socket
import subprocess
import time
from collections.abc import Callable, Mapping, Sequence
from contextlib import ExitStack
from dataclasses import dataclass
from pathlib import Path

from regionsync.errors import StackError

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Proc:
    name: str
    pid: int
    log_path: Path

    def alive(self) -> bool:
        return pid_alive(self.pid)


def run_dir(state_dir: Path) -> Path:
    path = state_dir / "run"
    path.mkdir(parents=True, exist_ok=True)
    return path


def log_dir(state_dir: Path) -> Path:
    path = state_dir / "logs"
    path.mkdir(parents=True, exist_ok=True)
    return path


def pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    # A zombie (exited child not yet reaped) still answers kill(0): look at its state. Look at
    # every thread: when a multi-threaded process is killed its main thread turns zombie first
    # while the others are still exiting and holding its files and sockets (seen: the Milvus
    # server's port still accepted connections after its main thread was a zombie).
    try:
        tids = os.listdir(f"/proc/{pid}/task")
    except OSError:
        return False
    for tid in tids:
        try:
            with open(f"/proc/{pid}/task/{tid}/stat") as fh:
                state = fh.read().rsplit(") ", 1)[1][0]
        except (OSError, IndexError):
            continue  # the thread is gone
        if state not in ("Z", "X"):
            return True
    return False


def spawn(
    state_dir: Path,
    name: str,
    argv: Sequence[str],
    env: Mapping[str, str] | None = None,
    cwd: Path | None = None,
    pass_fds: Sequence[int] = (),
) -> Proc:
    """Start ``argv`` detached (own session) with output appended to its log file. ``pass_fds``
    are inherited by the child (e.g. a lock file it must hold for its whole life)."""
    existing = read_proc(state_dir, name)
    if existing and existing.alive():
        raise StackError(f"{name} is already running (pid {existing.pid})")
    log_path = log_dir(state_dir) / f"{name}.log"
    with open(log_path, "ab") as out:
        child = subprocess.Popen(
            list(argv),
            stdout=out,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            env=dict(env) if env is not None else None,
            cwd=str(cwd) if cwd else None,
            start_new_session=True,
            pass_fds=tuple(pass_fds),
        )
    (run_dir(state_dir) / f"{name}.pid").write_text(str(child.pid))
    log.info("started %s (pid %d)", name, child.pid)
    return Proc(name, child.pid, log_path)


def read_proc(state_dir: Path, name: str) -> Proc | None:
    pid_file = state_dir / "run" / f"{name}.pid"
    try:
        pid = int(pid_file.read_text().strip())
    except (OSError, ValueError):
        return None
    return Proc(name, pid, state_dir / "logs" / f"{name}.log")


def stop(state_dir: Path, name: str, timeout: float = 15.0, sig: int = signal.SIGTERM) -> bool:
    """Stop a named process (its whole process group); SIGKILL after ``timeout``. True if it was running."""
    proc = read_proc(state_dir, name)
    if proc is None:
        return False
    was_running = proc.alive()
    if was_running:
        _signal_group(proc.pid, sig)
        deadline = time.monotonic() + timeout
        while proc.alive() and time.monotonic() < deadline:
            _reap(proc.pid)
            time.sleep(0.05)
        if proc.alive() and sig != signal.SIGKILL:  # a graceful stop was asked for and did not come
            log.warning("%s did not stop within %.0fs: killing", name, timeout)
            _signal_group(proc.pid, signal.SIGKILL)
        while proc.alive():  # SIGKILL is delivered asynchronously: wait until it has landed
            _reap(proc.pid)
            time.sleep(0.05)
    _reap(proc.pid)
    (state_dir / "run" / f"{name}.pid").unlink(missing_ok=True)
    return was_running


def kill9(state_dir: Path, name: str) -> None:
    """Crash a process the hard way (tests of crash recovery)."""
    stop(state_dir, name, timeout=0.0, sig=signal.SIGKILL)


def _signal_group(pid: int, sig: int) -> None:
    try:
        os.killpg(pid, sig)
    except (ProcessLookupError, PermissionError):
        try:
            os.kill(pid, sig)
        except ProcessLookupError:
            pass


def _reap(pid: int) -> None:
    try:
        os.waitpid(pid, os.WNOHANG)
    except ChildProcessError:
        pass


def wait_until(
    check: Callable[[], bool],
    timeout: float,
    what: str,
    proc: Proc | None = None,
    interval: float = 0.1,
) -> None:
    """Poll ``check`` until true. Fails fast if ``proc`` died; shows its log tail on failure."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if check():
                return
        except Exception:  # noqa: BLE001 - a probe that raises just means "not yet"
            pass
        if proc is not None and not proc.alive():
            raise StackError(f"{what}: process {proc.name} exited\n{tail(proc.log_path)}")
        time.sleep(interval)
    raise StackError(f"{what}: not ready after {timeout:.0f}s\n{tail(proc.log_path) if proc else ''}")


def tail(path: Path, lines: int = 30) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return ""


def port_open(host: str, port: int, timeout: float = 0.5) -> bool:
    try:
        with socket.create_connection((host, port), timeout=timeout):
            return True
    except OSError:
        return False


def _ephemeral_range() -> tuple[int, int]:
    try:
        low, high = Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()
        return int(low), int(high)
    except (OSError, ValueError):
        return 32768, 60999


PORT_SLOT_ENV = "REGIONSYNC_PORT_SLOT"
PORT_SLOT_WIDTH = 1000  # a multiple of it separates an object store's admin port from its gRPC port


def _port_slot() -> tuple[int, int]:
    """(i, n) from ``REGIONSYNC_PORT_SLOT=i/n``: this process takes only the ports of every n-th
    thousand, starting at the i-th. Stacks started side by side (the test workers) each pick in
    their own slot: a port one has chosen but not yet bound cannot be chosen by another."""
    raw = os.environ.get(PORT_SLOT_ENV, "")
    try:
        i, n = (int(x) for x in raw.split("/"))
    except ValueError:
        return 0, 1
    return (i % n, n) if n > 0 else (0, 1)


def in_port_slot(port: int) -> bool:
    i, n = _port_slot()
    return (port // PORT_SLOT_WIDTH) % n == i


# Ports this process has handed out: a stack's settings take some thirty ports before any of its
# services binds one, so a free port must also be one not given to another of them (seen: a
# stack's Prometheus failing with "address already in use" on a port handed out twice).
_GIVEN: set[int] = set()


def free_port() -> int:
    """A port nobody listens on, below the kernel's ephemeral range: a port the kernel hands out
    itself can be taken by any outgoing connection's source port before the service that was
    given it binds (seen: a region service failing with "address already in use" while tests of
    another stack ran on the machine). Within this process's slot (``REGIONSYNC_PORT_SLOT``), and
    never one this process handed out before."""
    low, _high = _ephemeral_range()
    rng = random.Random()
    for _ in range(2000):
        port = rng.randrange(10_000, max(10_001, low - 1))
        if not in_port_slot(port) or port in _GIVEN:
            continue
        with socket.socket() as sock:
            try:
                sock.bind(("127.0.0.1", port))
            except OSError:
                continue
            _GIVEN.add(port)
            return port
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def free_port_block(n: int) -> int:
    """First of ``n`` consecutive free ports (settings place the region services and the workers'
    metrics at a base port + an index). All are held open while checking, so none counts twice."""
    for _ in range(200):
        base = free_port()
        if base + n >= min(65000, _ephemeral_range()[0]) or not in_port_slot(base + n - 1):
            continue
        if any(port in _GIVEN for port in range(base + 1, base + n)):
            continue
        with ExitStack() as held:
            try:
                for port in range(base, base + n):
                    sock = held.enter_context(socket.socket())
                    sock.bind(("127.0.0.1", port))
            except OSError:
                continue
            _GIVEN.update(range(base, base + n))
            return base
    raise RuntimeError(f"no block of {n} free ports")


def free_service_ports(regions: int) -> dict[str, int]:
    """Settings updates that move every port a worker or region service listens on (besides the
    infrastructure's) to free ones, so two stacks on one machine do not collide."""
    return {
        "serve_base_port": free_port_block(regions),
        # The change agent, an indexer and a dialog worker per region, a replicator per ordered pair.
        "metrics_base_port": free_port_block(1 + 2 * regions + regions * (regions - 1)),
        "prometheus_port": free_port(),
    }


def _free(port: int) -> bool:
    with socket.socket() as sock:
        try:
            sock.bind(("127.0.0.1", port))
            return True
        except OSError:
            return False


def free_object_store_port() -> int:
    """An S3 port for an embedded object store whose whole block is free (its ten ports: see
    stack/seaweed.py, which places them from the S3 port up, and the admin gRPC port
    10000 above its admin port)."""
    from regionsync.settings import S3_PORT_STRIDE

    low, _high = _ephemeral_range()
    for _ in range(400):
        base = free_port_block(S3_PORT_STRIDE)
        grpc = base + 8 + 10000
        if base + S3_PORT_STRIDE + 10000 < low and in_port_slot(grpc) and grpc not in _GIVEN and _free(grpc):
            _GIVEN.add(grpc)
            return base
    raise RuntimeError("no free block of ports for an object store")


def free_infra_ports(regions: list[str], source: str | None = None) -> dict[str, object]:
    """Settings updates that put every region's broker, Postgres, object store and Milvus, and
    Kafka Connect, on free ports (the maps name each region; the flat values are the source's)."""
    source = source or regions[0]
    kafka = {r: f"127.0.0.1:{free_port()}" for r in regions}
    pg = {r: f"127.0.0.1:{free_port()}" for r in regions}
    s3 = {r: f"http://127.0.0.1:{free_object_store_port()}" for r in regions}
    return {
        "kafka_bootstraps": kafka, "kafka_bootstrap": kafka[source],
        "kafka_links": {r: f"127.0.0.1:{free_port()}" for r in regions},  # the brokers' edges (stack/edge.py)
        "pg_addresses": pg, "pg_port": int(pg[source].rsplit(":", 1)[1]),
        "s3_endpoints": s3, "s3_endpoint": s3[source],
        "milvus_uris": {r: f"http://127.0.0.1:{free_port()}" for r in regions},
        "connect_url": f"http://127.0.0.1:{free_port()}",
        **free_service_ports(len(regions)),
    }
