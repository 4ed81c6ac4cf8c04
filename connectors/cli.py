"""``regionsync connectors ...``: apply, inspect, restart and delete the Debezium connector.

Nothing printed here carries a secret: configs go through :func:`connectors.config.masked`, and
errors from Connect are scrubbed by the client.
"""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any

from connectors import slots
from connectors.client import ConnectClient, check_failed, summary
from connectors.config import load, masked, scrub, secret_values
from connectors.errors import ConnectorFailed, ConnectorNotFound
from regionsync.settings import Settings

REST_TIMEOUT_S = 10.0


def register(subparsers: Any) -> None:
    """Add ``connectors`` and its sub-commands to the ``regionsync`` parser."""
    parser = subparsers.add_parser(
        "connectors",
        help="manage the Debezium connector through the Kafka Connect REST API",
        description="Kafka Connect URL, connector name, slot and publication come from settings "
        "(REGIONSYNC_CONNECT_URL, REGIONSYNC_CONNECTOR_NAME, REGIONSYNC_REPLICATION_SLOT, REGIONSYNC_PUBLICATION).",
    )
    sub = parser.add_subparsers(dest="connectors_command", required=True)

    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--name", help="connector name (default: REGIONSYNC_CONNECTOR_NAME)")

    p = sub.add_parser("apply", parents=[common], help="validate, then create or update the connector (idempotent)")
    p.add_argument(
        "--config", metavar="FILE",
        help="connector template, JSON with ${VAR} placeholders (default: connectors/templates/postgres-documents.json)",
    )
    p.add_argument("--dry-run", action="store_true", help="print the rendered config, secrets masked; change nothing")
    p.add_argument(
        "--wait", type=float, default=60.0, metavar="SECONDS",
        help="wait this long for connector and tasks to be RUNNING (0: don't wait; default 60)",
    )
    p.set_defaults(func=cmd_apply)

    p = sub.add_parser("status", parents=[common], help="connector and task states (exit 1 unless all RUNNING)")
    p.add_argument("--json", action="store_true", help="print Connect's status document")
    p.set_defaults(func=cmd_status)

    p = sub.add_parser("restart", parents=[common], help="restart the connector and its failed tasks")
    p.add_argument("--all", action="store_true", help="restart every task, not only the failed ones")
    p.add_argument("--wait", type=float, default=60.0, metavar="SECONDS", help="wait for RUNNING (0: don't; default 60)")
    p.set_defaults(func=cmd_restart)

    p = sub.add_parser("delete", parents=[common], help="delete the connector, then drop its replication slot and publication")
    p.add_argument("--keep-slot", action="store_true", help="keep the replication slot and publication (WAL keeps growing)")
    p.set_defaults(func=cmd_delete)


def _client(settings: Settings) -> ConnectClient:
    return ConnectClient(settings.connect_url, timeout=REST_TIMEOUT_S, secrets=secret_values(settings))


def _name(args: argparse.Namespace, settings: Settings) -> str:
    return str(args.name or settings.connector_name)


def cmd_apply(args: argparse.Namespace, settings: Settings) -> int:
    config = load(settings, args.config)
    name = _name(args, settings)
    if args.dry_run:
        shown = masked(config, secret_values(settings, config))
        print(json.dumps({"name": name, "config": shown}, indent=2))
        return 0
    client = _client(settings)
    result = client.apply(name, config)
    print(f"{name}: {result}")
    if args.wait > 0:
        status = client.wait_running(name, timeout=args.wait)
        print(f"{name}: {summary(status)}")
    return 0


def cmd_status(args: argparse.Namespace, settings: Settings) -> int:
    name = _name(args, settings)
    client = _client(settings)
    try:
        status = client.status(name)
    except ConnectorNotFound:
        print(f"{name}: not found", file=sys.stderr)
        return 1
    if args.json:
        # Task traces are Connect's free text: scrub them like every other message.
        print(scrub(json.dumps(status, indent=2), secret_values(settings)))
    else:
        print(f"{name}: {summary(status)}")
    try:
        check_failed(name, status, secret_values(settings))
    except ConnectorFailed as exc:
        if not args.json:
            print(exc.trace, file=sys.stderr)
        return 1
    tasks = status.get("tasks") or []
    running = status.get("connector", {}).get("state") == "RUNNING" and tasks and all(t.get("state") == "RUNNING" for t in tasks)
    return 0 if running else 1


def cmd_restart(args: argparse.Namespace, settings: Settings) -> int:
    name = _name(args, settings)
    client = _client(settings)
    client.restart(name, failed_only=not args.all)
    print(f"{name}: restart requested ({'all tasks' if args.all else 'failed tasks only'})")
    if args.wait > 0:
        print(f"{name}: {summary(client.wait_running(name, timeout=args.wait))}")
    return 0


def cmd_delete(args: argparse.Namespace, settings: Settings) -> int:
    name = _name(args, settings)
    client = _client(settings)
    stored = client.get_config(name) or {}
    existed = client.delete(name)
    print(f"{name}: {'deleted' if existed else 'not found'}")
    if args.keep_slot:
        print("kept replication slot and publication (--keep-slot)")
        return 0
    slot = stored.get("slot.name") or settings.replication_slot
    publication = stored.get("publication.name") or settings.publication
    dropped = slots.drop(settings, slot=slot, publication=publication)
    print(f"replication slot {slot}: {'dropped' if dropped.slot else 'absent'}")
    print(f"publication {publication}: {'dropped' if dropped.publication else 'absent'}")
    return 0
