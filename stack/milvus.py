"""One Milvus server process per region: the Milvus C++ core shipped in ``milvus-lite`` 2.5.1.

The wheel carries the binary ``milvus_lite/lib/milvus`` and the shared libraries it links
against. Given an address instead of a Unix socket it is a standalone server speaking Milvus'
gRPC API, so a region's indexer, the search CLI and any number of other processes reach it at
``http://H:P`` exactly as they would reach a real Milvus. We start it the way the wheel's own
``milvus_lite/server.py`` does: ``milvus FILE.db HOST:PORT LOGLEVEL`` with ``LD_LIBRARY_PATH``
pointing at that ``lib/`` directory, the data directory as working directory.

Data lives in ``STATE/milvus/<region>/milvus.db`` and survives a kill -9; after a restart the
server loads its collections by itself. In TCP mode the binary does not lock its database (a
second server on the same file starts and serves it: measured), and ``server.py``'s lock lives
in the Python process that launched it; so :func:`start` takes a lock that the server process
itself holds for as long as it lives, and a second start on the same data fails at once.

A region configured with an explicit URI in ``Settings.milvus_uris`` that is not a local
``http://127.0.0.1:PORT`` address is somebody else's server: this module refuses to start it.
"""

from __future__ import annotations

import fcntl
import importlib.util
import logging
import os
import signal
from pathlib import Path
from urllib.parse import urlparse

from indexer.milvus_client import quiet_pymilvus
from regionsync.errors import ConfigError, StackError
from regionsync.settings import Settings
from stack import procs

log = logging.getLogger(__name__)

LOCAL_HOSTS = ("127.0.0.1", "localhost")
DB_FILE = "milvus.db"
LOCK_FILE = "server.lock"
LOG_LEVEL = "ERROR"  # the binary's own log (STATE/logs/milvus-<region>.log); INFO logs every call


def proc_name(region: str) -> str:
    return f"milvus-{region}"


def data_dir(settings: Settings, region: str) -> Path:
    return settings.state_dir / "milvus" / region


def db_path(settings: Settings, region: str) -> Path:
    # A fixed file name: the binary accepts only [A-Za-z0-9._-]{1,36}, region names are free text.
    return data_dir(settings, region) / DB_FILE


def address(settings: Settings, region: str) -> tuple[str, int]:
    """Host and port of a region's embedded server, from ``settings.milvus_uri(region)``."""
    uri = settings.milvus_uri(region)
    parsed = urlparse(uri)
    if parsed.scheme not in ("http", "tcp") or parsed.hostname not in LOCAL_HOSTS or parsed.port is None:
        raise ConfigError(f"region {region!r} uses Milvus at {uri}: not an embedded Milvus server")
    return parsed.hostname, parsed.port


def binary() -> Path:
    """The server binary of the installed milvus-lite wheel (found without importing the package,
    whose ``__init__`` imports pkg_resources)."""
    spec = importlib.util.find_spec("milvus_lite")
    locations = list(spec.submodule_search_locations or []) if spec else []
    for location in locations:
        path = Path(location) / "lib" / "milvus"
        if path.is_file():
            return path
    raise StackError(
        "the Milvus server binary milvus_lite/lib/milvus is missing: install milvus-lite==2.5.1 "
        "(3.x is a pure-Python rewrite without it)"
    )


def _answers(uri: str, token: str = "", timeout: float = 2.0) -> bool:
    from pymilvus import MilvusClient

    quiet_pymilvus()
    client = MilvusClient(uri=uri, token=token, timeout=timeout)
    try:
        client.list_collections(timeout=timeout)
        return True
    finally:
        client.close()


def is_up(settings: Settings, region: str) -> bool:
    """True if the region's Milvus answers a list-collections call (whoever started it)."""
    uri = settings.milvus_uri(region)
    parsed = urlparse(uri)
    if parsed.hostname and parsed.port and not procs.port_open(parsed.hostname, parsed.port):
        return False
    try:
        return _answers(uri, settings.milvus_token.get_secret_value())
    except Exception:  # noqa: BLE001 - any failure to answer means "not up"
        return False


def _check_data_dir(ddir: Path) -> None:
    # milvus-lite 3.x kept its files in this same directory; the C++ server cannot read them and
    # would start empty beside them. Say so rather than serve an empty region over old data.
    if ddir.is_dir() and not (ddir / DB_FILE).exists():
        foreign = sorted(p.name for p in ddir.iterdir() if p.name != LOCK_FILE)
        if foreign:
            raise StackError(
                f"{ddir} holds {', '.join(foreign[:5])} but no {DB_FILE}: data of an older (milvus-lite 3.x) "
                "server that the C++ Milvus cannot read. Move it away before starting this region's Milvus."
            )


def _lock(ddir: Path, region: str) -> int:
    """An exclusive flock on the data dir's lock file; the fd is handed to the server process,
    so the lock lasts exactly as long as the server does (a kill -9 releases it)."""
    fd = os.open(ddir / LOCK_FILE, os.O_RDWR | os.O_CREAT, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        os.close(fd)
        raise StackError(f"cannot start Milvus for region {region}: {ddir} is in use by another server") from None
    return fd


def start(settings: Settings, region: str, timeout: float = 60.0) -> procs.Proc:
    """Start the region's Milvus server and wait until a client can list collections."""
    host, port = address(settings, region)
    if procs.port_open(host, port):
        raise StackError(f"cannot start Milvus for region {region}: {host}:{port} is already in use")
    ddir = data_dir(settings, region)
    _check_data_dir(ddir)
    ddir.mkdir(parents=True, exist_ok=True)  # the binary does not create it
    exe = binary()
    # The server needs no settings of ours (and so gets none of their secrets): only its libraries.
    env = dict(os.environ)
    env["LD_LIBRARY_PATH"] = os.pathsep.join(p for p in (str(exe.parent), env.get("LD_LIBRARY_PATH", "")) if p)
    argv = [str(exe), str(db_path(settings, region)), f"{host}:{port}", LOG_LEVEL]
    lock_fd = _lock(ddir, region)
    try:
        proc = procs.spawn(settings.state_dir, proc_name(region), argv, env=env, cwd=ddir, pass_fds=(lock_fd,))
    finally:
        os.close(lock_fd)  # the server's copy keeps the lock
    procs.wait_until(
        lambda: _answers(settings.milvus_uri(region)), timeout, f"Milvus for region {region}", proc, interval=0.1,
    )
    log.info("Milvus for region %s up at %s (data %s)", region, settings.milvus_uri(region), ddir)
    return proc


def stop(settings: Settings, region: str, timeout: float = 15.0) -> bool:
    """Stop the region's server. SIGTERM is the binary's graceful shutdown (about 1.5 s here; it
    ignores SIGINT); SIGKILL follows after ``timeout``. True if it was running."""
    return procs.stop(settings.state_dir, proc_name(region), timeout=timeout, sig=signal.SIGTERM)
