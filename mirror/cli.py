"""``regionsync mirror run|status|pause|resume``: the replicators between regions."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable
from typing import Any

import orjson

from regionsync.settings import Settings


def register(sub: Any, serve: Callable[[Settings, str, str], int] | None = None) -> None:
    """``serve`` runs a replicator (the roof's, with what must travel before the records)."""
    p = sub.add_parser("mirror", help="replication between regions: run a replicator, status, pause, resume")
    actions = p.add_subparsers(dest="action", required=True)
    run = actions.add_parser("run", help="copy one region's topics into another (runs in the target region)")
    run.add_argument("--from", dest="source", required=True, help="region whose topics are copied")
    run.add_argument("--to", dest="target", required=True, help="region that receives them")
    run.set_defaults(func=_run, serve=serve)
    st = actions.add_parser("status", help="what each region has not copied yet of the others (lag)")
    st.add_argument("--json", action="store_true")
    st.set_defaults(func=_status)
    for name, paused in (("pause", True), ("resume", False)):
        a = actions.add_parser(name, help=f"{name} the replicator from one region into another")
        a.add_argument("--from", dest="source", required=True)
        a.add_argument("--to", dest="target", required=True)
        a.add_argument("--reason", default="", help="shown in the replicator's log")
        a.set_defaults(func=_pause, paused=paused)


def _check_pair(settings: Settings, source: str, target: str) -> None:
    from regionsync.errors import ConfigError

    if (source, target) not in settings.mirror_pairs():
        raise ConfigError(f"no replicator from {source!r} to {target!r}; regions: {', '.join(settings.regions)}")


def _run(args: argparse.Namespace, settings: Settings) -> int:
    from mirror.replicator import serve

    _check_pair(settings, args.source, args.target)
    run: Callable[[Settings, str, str], int] = args.serve or serve
    return run(settings, args.source, args.target)


def _status(args: argparse.Namespace, settings: Settings) -> int:
    from mirror.status import inbound

    out = {region: inbound(settings, region) for region in settings.regions}
    if args.json:
        sys.stdout.write(orjson.dumps(out, option=orjson.OPT_INDENT_2).decode() + "\n")
        return 0
    for target, sources in out.items():
        for source, row in sources.items():
            seen = "never" if row["source_seen_s"] is None else f"{row['source_seen_s']:.1f}s ago"
            print(f"{source:>8} -> {target:<8} lag {row['lag_records']} records, {row['lag_seconds']:.1f}s; "
                  f"source last answered {seen}; {row['topics']}")
    return 0


def _pause(args: argparse.Namespace, settings: Settings) -> int:
    from mirror.checkpoints import set_paused
    from regionsync.pgdb import region_dsn

    _check_pair(settings, args.source, args.target)
    set_paused(region_dsn(settings, args.target), args.source, args.paused, args.reason)
    print(f"replicator {args.source} -> {args.target}: {'paused' if args.paused else 'running'}")
    return 0
