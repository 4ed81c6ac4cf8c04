"""One milvus-lite server process per region (the embedded stack's stand-in for a Milvus cluster).

milvus-lite 3.x runs as ``python -m milvus_lite server --data-dir D --host H --port P`` and speaks
Milvus' gRPC API, so a region's indexer, the search CLI and any number of other processes reach it
at ``http://H:P`` exactly as they would reach a real Milvus. Data lives in
``STATE/milvus/<region>`` and survives a kill -9 (write-ahead log). After a restart its
collections are *released*; :class:`indexer.sink.RegionSink` loads them again.

A region configured with an explicit URI in ``Settings.milvus_uris`` that is not a local
``http://127.0.0.1:PORT`` address is somebody else's server: this module refuses to start it.
"""

from __future__ import annotations

import logging
import signal
import sys
from pathlib import Path
from urllib.parse import urlparse

from indexer.milvus_client import quiet_pymilvus
from regionsync.errors import ConfigError, StackError
from regionsync.settings import Settings
from regionsync.stack import procs

log = logging.getLogger(__name__)

LOCAL_HOSTS = ("127.0.0.1", "localhost")


def proc_name(region: str) -> str:
    return f"milvus-{region}"


def data_dir(settings: Settings, region: str) -> Path:
    return settings.state_dir / "milvus" / region


def address(settings: Settings, region: str) -> tuple[str, int]:
    """Host and port of a region's embedded server, from ``settings.milvus_uri(region)``."""
    uri = settings.milvus_uri(region)
    parsed = urlparse(uri)
    if parsed.scheme not in ("http", "tcp") or parsed.hostname not in LOCAL_HOSTS or parsed.port is None:
        raise ConfigError(f"region {region!r} uses Milvus at {uri}: not an embedded milvus-lite server")
    return parsed.hostname, parsed.port


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


def start(settings: Settings, region: str, timeout: float = 60.0) -> procs.Proc:
    """Start the region's milvus-lite server and wait until a client can list collections."""
    host, port = address(settings, region)
    if procs.port_open(host, port):
        raise StackError(f"cannot start milvus-lite for region {region}: {host}:{port} is already in use")
    ddir = data_dir(settings, region)
    ddir.parent.mkdir(parents=True, exist_ok=True)
    argv = [
        sys.executable, "-m", "milvus_lite", "server",
        "--data-dir", str(ddir), "--host", host, "--port", str(port),
    ]
    proc = procs.spawn(settings.state_dir, proc_name(region), argv, env=settings.child_env())
    procs.wait_until(
        lambda: _answers(settings.milvus_uri(region)), timeout, f"milvus-lite for region {region}", proc,
        interval=0.2,
    )
    log.info("milvus-lite for region %s up at %s (data %s)", region, settings.milvus_uri(region), ddir)
    return proc


def stop(settings: Settings, region: str, timeout: float = 15.0) -> bool:
    """Stop the region's server. SIGINT is milvus-lite's graceful shutdown (drains in-flight
    calls, closes the database); SIGKILL follows after ``timeout``. True if it was running."""
    return procs.stop(settings.state_dir, proc_name(region), timeout=timeout, sig=signal.SIGINT)
