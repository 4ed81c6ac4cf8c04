"""The S3-compatible object store of the embedded stack: moto's server mode, reached over HTTP.

Production points ``s3_endpoint`` at AWS (empty endpoint) or MinIO; the code that talks to it
(``dialog.snapshots``) is the same boto3 code either way. moto keeps objects in memory: a restart
loses them, like the tansu broker, so the stack restarts it together with everything else.
"""

from __future__ import annotations

import sys
from urllib.parse import urlparse

import requests

from regionsync.errors import StackError
from regionsync.settings import Settings
from regionsync.stack import procs

NAME = "s3"


def _host_port(settings: Settings) -> tuple[str, int]:
    url = urlparse(settings.s3_endpoint)
    if not url.hostname or not url.port:
        raise StackError(f"s3_endpoint {settings.s3_endpoint!r} needs a host and a port for the embedded server")
    return url.hostname, url.port


def is_running(settings: Settings) -> bool:
    try:
        return requests.get(f"{settings.s3_endpoint.rstrip('/')}/", timeout=1).status_code < 500
    except requests.RequestException:
        return False


def start(settings: Settings) -> procs.Proc:
    host, port = _host_port(settings)
    argv = [sys.executable, "-m", "moto.server", "-H", host, "-p", str(port)]
    proc = procs.spawn(settings.state_dir, NAME, argv)
    procs.wait_until(lambda: is_running(settings), 30, "moto S3 server", proc)
    return proc


def stop(settings: Settings) -> None:
    procs.stop(settings.state_dir, NAME)
