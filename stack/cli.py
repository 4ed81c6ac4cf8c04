"""``regionsync stack up|down|status``."""

from __future__ import annotations

import argparse
import sys
from typing import Any

import orjson

from regionsync.settings import Settings


def register(sub: Any) -> None:
    p = sub.add_parser("stack", help="the embedded default stack (no Docker): up, down, status")
    actions = p.add_subparsers(dest="action", required=True)
    up = actions.add_parser("up", help="start every region (object store, broker, Postgres, Milvus, workers, "
                            "replicators) and, in the source region, Connect + Debezium and the change agent")
    up.add_argument("--no-workers", action="store_true", help="start services only, not the stream workers")
    up.add_argument("--json", action="store_true")
    up.set_defaults(func=_up)
    init = actions.add_parser("init", help="create a region's databases (the CMS table and publication in the source "
                              "region) and topics on servers run elsewhere (docker-compose, Kubernetes)")
    init.add_argument("--region", required=True, help="the region to prepare (one of REGIONSYNC_REGIONS)")
    init.set_defaults(func=_init)
    down = actions.add_parser("down", help="stop every process of the stack (data stays in the state dir)")
    down.set_defaults(func=_down)
    st = actions.add_parser("status", help="endpoints, process states and each region's lag")
    st.add_argument("--json", action="store_true")
    st.set_defaults(func=_status)


def _up(args: argparse.Namespace, settings: Settings) -> int:
    from stack import stack

    info = stack.up(settings, workers=not args.no_workers)
    _print(info, args.json)
    return 0


def _init(args: argparse.Namespace, settings: Settings) -> int:
    from stack import stack

    settings.for_region(args.region)  # an unknown region fails here, naming the configured ones
    created = stack.init_region(settings, args.region)
    print(f"region {args.region}: databases ready; topics created: {', '.join(created) or 'none (all there)'}")
    return 0


def _down(args: argparse.Namespace, settings: Settings) -> int:
    from stack import stack

    stopped = stack.down(settings)
    print("stopped: " + ", ".join(stopped))
    return 0


def _status(args: argparse.Namespace, settings: Settings) -> int:
    from stack import stack

    info = stack.status(settings)
    _print(info, args.json)
    return 0


def _print(info: dict[str, Any], as_json: bool) -> None:
    if as_json:
        sys.stdout.write(orjson.dumps(info, option=orjson.OPT_INDENT_2).decode() + "\n")
        return
    print("\n".join(render(info)))


def render(info: dict[str, Any]) -> list[str]:
    """The text of ``stack up`` and ``stack status``: one line per process of the stack, by region."""
    lines = [
        f"state dir     {info['state_dir']}",
        f"connect       {info['connect']['url']}  up={info['connect']['up']}  connector={info['connect']['connector']}"
        f"  (in {info['source_region']})",
        f"prometheus    {info['prometheus']['url']}  up={info['prometheus']['up']}",
    ]
    lines += [f"{name:<13} running={running}" for name, running in info["workers"].items()]
    for region, r in info["regions"].items():
        role = " (source)" if r.get("source") else ""
        lines.append(f"region {region}{role}")
        lines.append(f"  object store {r['object_store']['endpoint']}  up={r['object_store']['up']}")
        lines.append(f"  broker       {r['broker']['bootstrap']}  up={r['broker']['up']}")
        lines.append(f"  postgres     {r['postgres']['dsn']}  up={r['postgres']['up']}")
        lines.append(f"  milvus       {r['milvus_uri']}  up={r['milvus_up']}  indexer={r['indexer_running']} lag={r['lag']}  "
                     f"dialog worker={r['dialog_running']}")
        for source, row in (r.get("replication") or {}).items():
            running = r["mirrors_in"].get(source)
            lines.append(f"  from {source:<7} replicator={running}  lag {row['lag_records']} records, "
                         f"{row['lag_seconds']:.1f}s")
        service = f"  serve        {r['service_url']}  running={r['service_running']}"
        if r.get("service_ready") is not None:
            service += f"  ready={r['service_ready']}  role={r.get('role')}"
        lines.append(service)
    return lines
