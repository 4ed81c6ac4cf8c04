"""A Prometheus server (Debian's ``prometheus`` package) scraping the embedded stack.

The scrape config is rendered from the settings (every port the stack uses), so it always
matches the running stack; ``deploy/prometheus/prometheus.yml`` is the same config for the
default settings (a test keeps the two equal) and ``deploy/prometheus/alerts.yml`` the rules.
Prometheus reads YAML, and JSON is YAML, so the rendered file is JSON.
"""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

import orjson
import requests

from regionsync.errors import StackError
from regionsync.settings import Settings
from stack import procs

NAME = "prometheus"
RULES = Path(__file__).resolve().parents[1] / "deploy" / "prometheus" / "alerts.yml"
SCRAPE_INTERVAL = "5s"


def targets(settings: Settings) -> dict[str, list[tuple[str, dict[str, str]]]]:
    """Job -> (host:port, labels) of every /metrics the embedded stack serves."""
    host = settings.serve_host
    return {
        "regionsync-service": [(f"{host}:{settings.serve_port(r)}", {"region": r}) for r in settings.regions],
        "regionsync-changes": [(f"{host}:{settings.metrics_port('changes')}", {"region": settings.source_region})],
        "regionsync-indexer": [(f"{host}:{settings.metrics_port('indexer', r)}", {"region": r}) for r in settings.regions],
        "regionsync-dialog": [(f"{host}:{settings.metrics_port('dialog', r)}", {"region": r}) for r in settings.regions],
        # A replicator runs in its target region.
        "regionsync-mirror": [(f"{host}:{settings.metrics_port('mirror', t, s)}", {"region": t})
                              for s, t in settings.mirror_pairs()],
    }


def config(settings: Settings, rules: Path = RULES) -> dict[str, Any]:
    jobs: list[dict[str, Any]] = []
    for job, found in targets(settings).items():
        groups = [{"targets": [t], "labels": labels} if labels else {"targets": [t]} for t, labels in found]
        jobs.append({"job_name": job, "static_configs": groups})
        if job == "regionsync-service" and settings.tls:  # the services serve HTTPS with the local CA's certificate
            from serve.tls import tls_files

            jobs[-1].update({"scheme": "https", "tls_config": {"ca_file": str(tls_files(settings).ca)}})
    return {
        "global": {"scrape_interval": SCRAPE_INTERVAL, "evaluation_interval": SCRAPE_INTERVAL},
        "rule_files": [str(rules)],
        "scrape_configs": jobs,
    }


def binary() -> str:
    path = shutil.which("prometheus")
    if path is None:
        raise StackError("prometheus is not installed (scripts/setup.sh installs Debian's package)")
    return path


def url(settings: Settings) -> str:
    return f"http://127.0.0.1:{settings.prometheus_port}"


def is_up(settings: Settings) -> bool:
    try:
        return requests.get(f"{url(settings)}/-/ready", timeout=1).status_code == 200
    except requests.RequestException:
        return False


def start(settings: Settings) -> procs.Proc:
    home = settings.state_dir / NAME
    home.mkdir(parents=True, exist_ok=True)
    cfg = home / "prometheus.yml"
    cfg.write_bytes(orjson.dumps(config(settings), option=orjson.OPT_INDENT_2))
    argv = [
        binary(), f"--config.file={cfg}", f"--storage.tsdb.path={home / 'data'}",
        f"--web.listen-address=127.0.0.1:{settings.prometheus_port}", "--storage.tsdb.retention.time=2d",
    ]
    proc = procs.spawn(settings.state_dir, NAME, argv)
    procs.wait_until(lambda: is_up(settings), 60, "prometheus", proc)
    return proc


def stop(settings: Settings) -> None:
    procs.stop(settings.state_dir, NAME)
