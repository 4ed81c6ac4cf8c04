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
    up = actions.add_parser("up", help="start Postgres, broker, S3, Milvus per region, Connect + Debezium, workers")
    up.add_argument("--no-workers", action="store_true", help="start services only, not the stream workers")
    up.add_argument("--json", action="store_true")
    up.set_defaults(func=_up)
    down = actions.add_parser("down", help="stop every process of the stack (data stays in the state dir)")
    down.set_defaults(func=_down)
    st = actions.add_parser("status", help="endpoints, process states and each region's lag")
    st.add_argument("--json", action="store_true")
    st.set_defaults(func=_status)


def _up(args: argparse.Namespace, settings: Settings) -> int:
    from regionsync.stack import stack

    info = stack.up(settings, workers=not args.no_workers)
    _print(info, args.json)
    return 0


def _down(args: argparse.Namespace, settings: Settings) -> int:
    from regionsync.stack import stack

    stopped = stack.down(settings)
    print("stopped: " + ", ".join(stopped))
    return 0


def _status(args: argparse.Namespace, settings: Settings) -> int:
    from regionsync.stack import stack

    info = stack.status(settings)
    _print(info, args.json)
    return 0


def _print(info: dict[str, Any], as_json: bool) -> None:
    if as_json:
        sys.stdout.write(orjson.dumps(info, option=orjson.OPT_INDENT_2).decode() + "\n")
        return
    print("\n".join(render(info)))


def render(info: dict[str, Any]) -> list[str]:
    """The text of ``stack up`` and ``stack status``: one line per process of the stack."""
    lines = [
        f"state dir     {info['state_dir']}",
        f"postgres      {info['postgres']['dsn']}  up={info['postgres']['up']}",
        f"kafka         {info['kafka']['bootstrap']}  up={info['kafka']['up']}",
        f"connect       {info['connect']['url']}  up={info['connect']['up']}  connector={info['connect']['connector']}",
        f"s3            {info['s3']['endpoint']}  up={info['s3']['up']}",
        f"prometheus    {info['prometheus']['url']}  up={info['prometheus']['up']}",
    ]
    lines += [f"{name:<13} running={running}" for name, running in info["workers"].items()]
    for region, r in info["regions"].items():
        lines.append(f"region {region:<7} milvus={r['milvus_uri']} up={r['milvus_up']} indexer={r['indexer_running']} "
                     f"lag={r['lag']}")
        service = f"  serve-{region:<6} {r['service_url']}  running={r['service_running']}"
        if r.get("service_ready") is not None:
            service += f"  ready={r['service_ready']}  role={r.get('role')}"
        lines.append(service)
    return lines
