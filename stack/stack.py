"""The embedded default stack: every region of the topology on one machine, without Docker.

Each region owns (``region_infra`` / ``region_workers``): its object store (SeaweedFS), its broker
(tansu, keeping its log in that object store) and the broker's edge (the mutual-TLS front the
other regions' replicators read it through: stack/edge.py), its Postgres (dialog state store, role and fence,
replicator checkpoints), its Milvus, its indexer, its dialog worker, its HTTP service and the
replicators that bring the other regions' topics into it. The source region
(``Settings.source_region``) also runs the CMS database (in its Postgres), Kafka Connect with the
Debezium connector and the change agent, so text is embedded once, in one place.

``up`` starts (or finds running) all of it; ``down`` stops it in reverse, data kept in the state
directory; nothing lives in memory only. Production runs the same code against real Kafka,
Connect, Milvus, Postgres and S3 per region: see docker-compose.yml and deploy/.
"""

from __future__ import annotations

import logging
import sys
import threading
from collections.abc import Callable
from typing import Any

from tenacity import Retrying, retry_if_exception_type, stop_after_attempt

from regionsync.settings import Settings
from stack import broker, connect, edge, milvus, postgres, procs, prometheus, seaweed, topics

log = logging.getLogger(__name__)

CHANGES = "changes"


def indexer_name(region: str) -> str:
    return f"indexer-{region}"


def dialog_name(region: str) -> str:
    return f"dialog-{region}"


def service_name(region: str) -> str:
    return f"serve-{region}"


def mirror_name(source: str, target: str) -> str:
    return f"mirror-{source}-{target}"


def region_infra(settings: Settings, region: str) -> tuple[str, ...]:
    """The data and messaging processes a region owns, in start order."""
    names = [seaweed.proc_name(region), postgres.proc_name(region), broker.proc_name(region)]
    if settings.link_tls:
        names.append(edge.proc_name(region))
    names.append(milvus.proc_name(region))
    if region == settings.source_region:
        names.append(connect.NAME)
    return tuple(names)


def region_workers(settings: Settings, region: str) -> tuple[str, ...]:
    """The workers a region runs, in start order (the replicators that bring other regions'
    topics into it run in it, as MirrorMaker 2 runs at the target)."""
    names = [*(mirror_name(s, region) for s in settings.others(region)), dialog_name(region), indexer_name(region)]
    if region == settings.source_region:
        names.append(CHANGES)
    names.append(service_name(region))
    return tuple(names)


# ---------------------------------------------------------------------------- infrastructure


def start_region_infra(settings: Settings, region: str) -> None:
    """Object store, Postgres, broker (on the object store), topics and Milvus of one region."""
    if not seaweed.is_up(settings, region):
        seaweed.start(settings, region)
    postgres.start(settings, region)
    if not broker.is_up(settings, region):
        broker.start(settings, region)
    topics.ensure_topics(settings, region)
    if settings.link_tls and not edge.is_up(settings, region):
        edge.start(settings, region)
    if not milvus.is_up(settings, region):
        milvus.start(settings, region)


def init_region(settings: Settings, region: str) -> list[str]:
    """A region's databases (and in the source region the CMS table and the publication Debezium
    reads), and its topics, on servers started by someone else (docker-compose's init service,
    Kubernetes' init job). Idempotent; returns the topics created."""
    import psycopg
    from psycopg import sql

    postgres.ensure_databases(settings, region)
    if region == settings.source_region:
        cms = settings.source()
        with psycopg.connect(cms.pg_dsn(), autocommit=True) as conn:
            found = conn.execute("SELECT 1 FROM pg_publication WHERE pubname = %s", (cms.publication,)).fetchone()
            if found is None:
                conn.execute(sql.SQL("CREATE PUBLICATION {} FOR TABLE {}").format(
                    sql.Identifier(cms.publication), sql.Identifier(*cms.capture_table.split("."))))
    return topics.ensure_topics(settings, region, timeout=60)


def start_infra(settings: Settings) -> None:
    """Every region's data and messaging services (regions in parallel), then Kafka Connect."""
    _in_parallel([lambda r=r: start_region_infra(settings, r) for r in settings.regions])  # type: ignore[misc]
    if not connect.is_up(settings):
        connect.start(settings)


def _in_parallel(jobs: list[Callable[[], object]]) -> None:
    errors: list[BaseException] = []

    def run(job: Callable[[], object]) -> None:
        try:
            job()
        except BaseException as exc:  # noqa: BLE001 - re-raised below, in the caller's thread
            errors.append(exc)

    threads = [threading.Thread(target=run, args=(job,), daemon=True) for job in jobs]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    if errors:
        raise errors[0]


def apply_connector(settings: Settings, timeout: float = 120.0, attempts: int = 1) -> str:
    """Register the connector (idempotent) and wait until it runs. On a loaded machine Connect's
    validate call can outlast the REST client's read timeout: ``attempts`` tries it again."""
    from connectors.client import ConnectClient
    from connectors.config import load, secret_values
    from connectors.errors import ConnectRestError

    config = load(settings)
    client = ConnectClient(settings.connect_url, secrets=secret_values(settings, config))
    outcome = Retrying(stop=stop_after_attempt(attempts), reraise=True, retry=retry_if_exception_type(ConnectRestError),
                       before_sleep=lambda _state: log.warning("applying the connector timed out; trying again"),
                       )(client.apply, settings.connector_name, config)
    client.wait_running(settings.connector_name, timeout=timeout)
    return str(outcome)


# ---------------------------------------------------------------------------- workers


def _spawn_module(settings: Settings, name: str, module: str, *args: str) -> procs.Proc:
    """A worker is a Python module run with this interpreter and the settings in its environment."""
    return procs.spawn(settings.state_dir, name, [sys.executable, "-m", module, *args], env=settings.child_env())


def start_changes_worker(settings: Settings) -> procs.Proc:
    return _spawn_module(settings.source(), CHANGES, "streams.app")


def start_indexer(settings: Settings, region: str) -> procs.Proc:
    return _spawn_module(settings.for_region(region), indexer_name(region), "indexer.worker", "--region", region)


def start_dialog_worker(settings: Settings, region: str) -> procs.Proc:
    return _spawn_module(settings.for_region(region), dialog_name(region), "dialog.process", "--region", region)


def start_mirror(settings: Settings, source: str, target: str) -> procs.Proc:
    return _spawn_module(settings.for_region(target), mirror_name(source, target), "cli.replicator",
                         "--from", source, "--to", target)


def start_service(settings: Settings, region: str, wait: bool = True) -> procs.Proc:
    from serve.auth import ensure_tokens_file

    written = ensure_tokens_file(settings)  # the services accept no caller without a token
    if written is not None:
        log.info("wrote fresh API tokens (assistant, operator) to %s (owner-only)", written)
    if settings.tls:  # the services serve HTTPS with the local CA's certificate
        from stack import pki

        pki.ensure(settings)
    proc = _spawn_module(settings.for_region(region), service_name(region), "serve", "--region", region)
    if wait:
        wait_service(settings, region, proc)
    return proc


def wait_service(settings: Settings, region: str, proc: procs.Proc | None = None) -> None:
    """Until the service answers and knows its role (a region that was active has read the
    others' control topics: serve/region.py)."""
    from serve.client import RegionClient

    procs.wait_until(RegionClient(settings, region).settled, 120, f"region service {region}", proc, interval=0.2)


def starter(settings: Settings, name: str) -> Callable[[], object]:
    """What starts the named process again, as ``up`` starts it."""
    fixed: dict[str, Callable[[], object]] = {
        CHANGES: lambda: start_changes_worker(settings),
        connect.NAME: lambda: connect.start(settings),
    }
    if name in fixed:
        return fixed[name]
    if name.startswith("mirror-"):
        pair = next(((s, t) for s, t in settings.mirror_pairs() if mirror_name(s, t) == name), None)
        if pair is None:
            raise KeyError(name)
        return lambda: start_mirror(settings, *pair)
    kind, _, region = name.partition("-")
    per_region: dict[str, Callable[[Settings, str], object]] = {
        "seaweed": seaweed.start,
        "postgres": postgres.start,
        "broker": _start_broker,
        "edge": edge.start,
        "milvus": milvus.start,
        "indexer": start_indexer,
        "dialog": start_dialog_worker,
        "serve": start_service,
    }
    if kind not in per_region or region not in settings.regions:
        raise KeyError(name)
    start = per_region[kind]
    return lambda: start(settings, region)


def _start_broker(settings: Settings, region: str) -> None:
    broker.start(settings, region)
    topics.ensure_topics(settings, region)


def start_workers(settings: Settings) -> None:
    """Every region's workers: its replicators, dialog worker, indexer, service (and the change
    agent in the source region).

    Every region runs its dialog worker, the standbys too: its state store follows the log all
    the time (a warm standby), so its /readyz can say "caught up" and a promotion has only the
    last few events to fold."""
    services = []
    for region in settings.regions:
        for name in region_workers(settings, region):
            if alive(settings, name):
                continue
            if name == service_name(region):
                services.append(start_service(settings, region, wait=False))
            else:
                starter(settings, name)()
    for proc in services:
        wait_service(settings, proc.name.removeprefix("serve-"), proc)


def up(settings: Settings, workers: bool = True) -> dict[str, Any]:
    start_infra(settings)
    if workers:
        start_workers(settings)
    apply_connector(settings, attempts=3)  # Connect's validate call can outlast its read timeout on a busy machine
    if workers and not prometheus.is_up(settings):
        prometheus.start(settings)
    return status(settings)


def down(settings: Settings) -> list[str]:
    stopped: list[str] = []
    names = [prometheus.NAME]
    for region in settings.regions:
        names += reversed(region_workers(settings, region))
    for name in names:
        if procs.stop(settings.state_dir, name):
            stopped.append(name)
    if connect.is_up(settings) or procs.read_proc(settings.state_dir, connect.NAME):
        connect.stop(settings)
        stopped.append(connect.NAME)
    for region in settings.regions:
        if milvus.stop(settings, region):
            stopped.append(milvus.proc_name(region))
        if edge.stop(settings, region):
            stopped.append(edge.proc_name(region))
        if procs.read_proc(settings.state_dir, broker.proc_name(region)):
            broker.stop(settings, region)
            stopped.append(broker.proc_name(region))
        if postgres.postmaster_pid(settings, region) is not None:
            postgres.stop(settings, region)
            stopped.append(postgres.proc_name(region))
        if seaweed.stop(settings, region):
            stopped.append(seaweed.proc_name(region))
    return stopped


# ---------------------------------------------------------------------------- status


def status(settings: Settings) -> dict[str, Any]:
    regions: dict[str, Any] = {}
    for region in settings.regions:
        local = settings.for_region(region)
        info: dict[str, Any] = {
            "source": region == settings.source_region,
            "object_store": {"endpoint": local.s3_endpoint, "up": seaweed.is_up(settings, region)},
            "broker": {"bootstrap": local.kafka_bootstrap, "up": broker.is_up(settings, region)},
            "edge": ({"address": settings.kafka_links[region], "up": edge.is_up(settings, region)}
                     if settings.link_tls else None),
            "postgres": {"dsn": local.pg_dsn_masked(settings.dialog_database(region)),
                         "up": postgres.is_running(settings, region)},
            "milvus_uri": settings.milvus_uri(region),
            "milvus_up": milvus.is_up(settings, region),
            "indexer_running": alive(settings, indexer_name(region)),
            "dialog_running": alive(settings, dialog_name(region)),
            "mirrors_in": {s: alive(settings, mirror_name(s, region)) for s in settings.others(region)},
            "service_url": settings.serve_url(region),
            "service_running": alive(settings, service_name(region)),
        }
        if info["service_running"]:
            info.update(_readiness(settings, region))
        try:
            from indexer.lag import region_lag

            info["lag"] = region_lag(settings, region)
        except Exception as exc:  # noqa: BLE001 - status must report, not fail
            info["lag"] = None
            info["lag_error"] = str(exc)
        try:
            from mirror.status import inbound

            info["replication"] = inbound(settings, region)
        except Exception as exc:  # noqa: BLE001
            info["replication"] = None
            info["replication_error"] = str(exc)
        regions[region] = info
    return {
        "state_dir": str(settings.state_dir),
        "source_region": settings.source_region,
        "connect": {"url": settings.connect_url, "up": connect.is_up(settings), "connector": _connector_state(settings)},
        "prometheus": {"url": prometheus.url(settings), "up": prometheus.is_up(settings)},
        "workers": {CHANGES: alive(settings, CHANGES)},
        "regions": regions,
    }


def _readiness(settings: Settings, region: str) -> dict[str, Any]:
    """The running service's own view: ready or not (/readyz), and the region's role."""
    import requests

    from serve.tls import verify

    try:
        body = requests.get(f"{settings.serve_url(region)}/readyz", timeout=10, verify=verify(settings)).json()
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


def alive(settings: Settings, name: str) -> bool:
    """The named process of the stack runs (Postgres by its postmaster.pid, the others by ours)."""
    kind, _, region = name.partition("-")
    if kind == "postgres" and region in settings.regions:
        return postgres.postmaster_pid(settings, region) is not None
    proc = procs.read_proc(settings.state_dir, name)
    return bool(proc and proc.alive())
