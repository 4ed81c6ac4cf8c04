"""``regionsync dialog rebuild|show|worker``. Wired into cli/main.py through :func:`register`."""

from __future__ import annotations

import argparse
import sys
from typing import Any

import orjson

from dialog.state import SessionState
from regionsync.settings import Settings


def register(subparsers: Any) -> Any:
    """Add ``dialog`` and its sub-commands; returns their group (serve/cli.py adds ``erase``)."""
    dialog = subparsers.add_parser("dialog", help="event-sourced dialog sessions (state store, snapshots, failover)")
    sub = dialog.add_subparsers(dest="dialog_command", required=True)

    p = sub.add_parser(
        "rebuild",
        help="bring a region's state store to the end of its session logs (from its own newest snapshot if empty)",
    )
    p.add_argument("--region", required=True, help="region to rebuild (env: REGIONSYNC_REGIONS lists them)")
    p.add_argument("--json", action="store_true", help="print the report as JSON")
    p.add_argument("--no-snapshots", action="store_true",
                   help="ignore the region's snapshots (in its object store): replay its whole logs")
    p.set_defaults(func=cmd_rebuild)

    p = sub.add_parser("show", help="print one session's state from a region's store")
    p.add_argument("session_id")
    p.add_argument("--region", required=True)
    p.add_argument("--json", action="store_true", help="print the state as JSON")
    p.set_defaults(func=cmd_show)

    p = sub.add_parser("worker", help="run a region's dialog worker (rebuild if empty, then follow the log)")
    p.add_argument("--region", required=True)
    p.add_argument("--no-snapshots", action="store_true",
                   help="do not read or write snapshots in the region's object store")
    p.set_defaults(func=cmd_worker)
    return sub


def cmd_rebuild(args: argparse.Namespace, settings: Settings) -> int:
    from dialog.worker import DialogWorker

    worker = DialogWorker.create(settings, args.region, snapshots=not args.no_snapshots)
    try:
        report = worker.rebuild()
    finally:
        worker.close()
    if args.json:
        _print_json(report.to_dict())
    else:
        print(
            f"region {report.region}: {report.sessions_restored} sessions restored "
            f"({report.source}{' ' + report.snapshot_id if report.snapshot_id else ''}), "
            f"{report.events_replayed} events replayed in {report.seconds:.2f}s"
        )
        for reason in report.skipped_snapshots:
            print(f"  skipped {reason}")
    return 0


def cmd_show(args: argparse.Namespace, settings: Settings) -> int:
    from dialog.pg_store import PostgresStore

    store = PostgresStore.for_region(settings, args.region)
    try:
        state = store.get(args.session_id)
    finally:
        store.close()
    if state is None:
        print(f"regionsync: no session {args.session_id!r} in region {args.region}", file=sys.stderr)
        return 1
    if args.json:
        _print_json(state.to_dict())
    else:
        print(render(state))
    return 0


def cmd_worker(args: argparse.Namespace, settings: Settings) -> int:
    from dialog.process import serve

    return serve(settings, args.region, snapshots=not args.no_snapshots)


def render(state: SessionState) -> str:
    lines = [
        f"session {state.session_id}  status={state.status}  intent={state.intent}  "
        f"events={state.applied}  last_seq={state.last_seq}  origin={state.origin}",
    ]
    if state.slots:
        lines.append("slots: " + ", ".join(f"{k}={v!r}" for k, v in sorted(state.slots.items())))
    for turn in state.turns:
        cited = f"  [{', '.join(turn.sources)}]" if turn.sources else ""
        lines.append(f"  #{turn.seq} {turn.role}: {turn.text}{cited}")
    for call in state.tool_calls:
        outcome = f"error {call.error}" if call.error else f"-> {orjson.dumps(call.result).decode()}"
        lines.append(f"  tool #{call.seq} {call.name}({orjson.dumps(call.arguments).decode()}) {outcome}")
    for fact in state.confirmed:
        lines.append(f"  confirmed: {fact}")
    if state.handoff_reason:
        lines.append(f"  handoff: {state.handoff_reason}")
    if state.gaps:
        lines.append("  MISSING events: " + ", ".join(f"{a}..{b}" for a, b in state.gaps))
    return "\n".join(lines)


def _print_json(data: Any) -> None:
    sys.stdout.write(orjson.dumps(data, option=orjson.OPT_INDENT_2 | orjson.OPT_NON_STR_KEYS).decode() + "\n")
