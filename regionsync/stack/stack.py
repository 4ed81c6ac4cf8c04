"""The embedded default stack: everything regionsync needs, on one machine, without Docker.

``up`` starts (or finds running) Postgres, the tansu broker, the S3-compatible snapshot store,
one Milvus per region, the Kafka Connect worker with the Debezium connector applied, and the
stream workers (the change agent and one indexer per region). ``down`` stops them in reverse.
Production runs the same code against real Kafka, Connect, Milvus and S3: see docker-compose.yml.
"""

from __future__ import annotations

import logging
import sys
from typing import Any

from regionsync.settings import Settings
from regionsync.stack import broker, connect, milvus, postgres, procs, prometheus, s3, topics

log = logging.getLogger(__name__)

CHANGES = "changes"


def indexer_name(region: str) -> str:
    return f"indexer-{region}"


def dialog_name(region: str) -> str:
    return f"dialog-{region}"


def service_name(region: str) -> str:
    return f"serve-{region}"


def start_infra(settings: Settings) -> None:
    """Data and messaging services (no workers)."""
    postgres.start(settings)
    if not procs.port_open(*_host_port(settings.kafka_bootstrap)):
        broker.start(settings)
    topics.ensure_topics(settings)
    if not s3.is_running(settings):
        s3.start(settings)
    for region in settings.regions:
        if not milvus.is_up(settings, region):
            milvus.start(settings, region)
    if not connect.is_up(settings):
        connect.start(settings)


def apply_connector(settings: Settings, timeout: float = 120.0, attempts: int = 1) -> str:
    """Register the connector (idempotent) and wait until it runs. On a loaded machine Connect's
    validate call can outlast the REST client's read timeout: ``attempts`` tries it again."""
    from connectors.client import ConnectClient
    from connectors.config import load, secret_values
    from connectors.errors import ConnectRestError

    config = load(settings)
    client = ConnectClient(settings.connect_url, secrets=secret_values(settings, config))
    for attempt in range(attempts):
        try:
            outcome = client.apply(settings.connector_name, config)
            break
        except ConnectRestError:
            if attempt == attempts - 1:
                raise
            log.warning("applying the connector timed out; trying again")
    client.wait_running(settings.connector_name, timeout=timeout)
    return str(outcome)


def _spawn_module(settings: Settings, name: str, module: str, *args: str) -> procs.Proc:
    """A worker is a Python module run with this interpreter and the settings in its environment."""
    return procs.spawn(settings.state_dir, name, [sys.executable, "-m", module, *args], env=settings.child_env())


def start_changes_worker(settings: Settings) -> procs.Proc:
    return _spawn_module(settings, CHANGES, "streams.app")


def start_indexer(settings: Settings, region: str) -> procs.Proc:
    return _spawn_module(settings, indexer_name(region), "indexer.worker", "--region", region)


def start_dialog_worker(settings: Settings, region: str) -> procs.Proc:
    return _spawn_module(settings, dialog_name(region), "dialog.worker", "--region", region)


def start_service(settings: Settings, region: str, wait: bool = True) -> procs.Proc:
    proc = _spawn_module(settings, service_name(region), "serve", "--region", region)
    if wait:
        from serve.client import RegionClient

        procs.wait_until(RegionClient(settings, region).is_up, 120, f"region service {region}", proc)
    return proc


def start_workers(settings: Settings) -> None:
    """The change agent, one indexer, one dialog worker and one region service per region.

    Every region runs its dialog worker, the standby too: its state store follows the log all
    the time (a warm standby), so its /readyz can say "caught up" and a promotion has only the
    last few events to fold."""
    if not _alive(settings, CHANGES):
        start_changes_worker(settings)
    for region in settings.regions:
        if not _alive(settings, indexer_name(region)):
            start_indexer(settings, region)
        if not _alive(settings, dialog_name(region)):
            start_dialog_worker(settings, region)
    started = [start_service(settings, r, wait=False) for r in settings.regions if not _alive(settings, service_name(r))]
    from serve.client import RegionClient

    for proc in started:
        region = proc.name.removeprefix("serve-")
        procs.wait_until(RegionClient(settings, region).is_up, 120, f"region service {region}", proc)


def up(settings: Settings, workers: bool = True) -> dict[str, Any]:
    start_infra(settings)
    if workers:
        start_workers(settings)
    apply_connector(settings)
    if workers and not prometheus.is_up(settings):
        prometheus.start(settings)
    return status(settings)


def down(settings: Settings) -> list[str]:
    stopped: list[str] = []
    names = [
        prometheus.NAME, *(service_name(r) for r in settings.regions), CHANGES,
        *(indexer_name(r) for r in settings.regions), *(dialog_name(r) for r in settings.regions),
    ]
    for name in names:
        if procs.stop(settings.state_dir, name):
            stopped.append(name)
    if connect.is_up(settings) or procs.read_proc(settings.state_dir, connect.NAME):
        connect.stop(settings)
        stopped.append("connect")
    for region in settings.regions:
        milvus.stop(settings, region)
        stopped.append(f"milvus-{region}")
    s3.stop(settings)
    broker.stop(settings)
    postgres.stop(settings)
    stopped += ["s3", "broker", "postgres"]
    return stopped


def status(settings: Settings) -> dict[str, Any]:
    regions: dict[str, Any] = {}
    for region in settings.regions:
        info: dict[str, Any] = {
            "milvus_uri": settings.milvus_uri(region),
            "milvus_up": milvus.is_up(settings, region),
            "indexer_running": _alive(settings, indexer_name(region)),
            "service_url": settings.serve_url(region),
            "service_running": _alive(settings, service_name(region)),
        }
        if info["service_running"]:
            info.update(_readiness(settings, region))
        try:
            from indexer.lag import region_lag

            info["lag"] = region_lag(settings, region)
        except Exception as exc:  # noqa: BLE001 - status must report, not fail
            info["lag"] = None
            info["lag_error"] = str(exc)
        regions[region] = info
    return {
        "state_dir": str(settings.state_dir),
        "postgres": {"dsn": settings.pg_dsn_masked(), "up": postgres.is_running(settings)},
        "kafka": {"bootstrap": settings.kafka_bootstrap, "up": procs.port_open(*_host_port(settings.kafka_bootstrap))},
        "connect": {"url": settings.connect_url, "up": connect.is_up(settings), "connector": _connector_state(settings)},
        "s3": {"endpoint": settings.s3_endpoint, "up": s3.is_running(settings)},
        "prometheus": {"url": prometheus.url(settings), "up": prometheus.is_up(settings)},
        "workers": {
            CHANGES: _alive(settings, CHANGES),
            **{dialog_name(r): _alive(settings, dialog_name(r)) for r in settings.regions},
        },
        "regions": regions,
    }


def _readiness(settings: Settings, region: str) -> dict[str, Any]:
    """The running service's own view: ready or not (/readyz), and the region's role."""
    import requests

    try:
        body = requests.get(f"{settings.serve_url(region)}/readyz", timeout=10).json()
        return {"service_ready": bool(body["ready"]), "role": body.get("role")}
    except Exception as exc:  # noqa: BLE001 - status must report, not fail
        return {"service_ready": False, "role": None, "service_error": str(exc)}


def _connector_state(settings: Settings) -> str | None:
    try:
        from connectors.client import ConnectClient

        st = ConnectClient(settings.connect_url, timeout=3).status(settings.connector_name)
        return str(st.get("connector", {}).get("state"))
    except Exception:  # noqa: BLE001
        return None


def _alive(settings: Settings, name: str) -> bool:
    proc = procs.read_proc(settings.state_dir, name)
    return bool(proc and proc.alive())


def _host_port(bootstrap: str) -> tuple[str, int]:
    host, port = bootstrap.rsplit(":", 1)
    return host, int(port)
