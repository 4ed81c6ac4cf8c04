"""``regionsync serve|ask|region``, and ``regionsync search`` through the running service.

``search`` and ``ask`` use the region's service when it answers (the model is already loaded
there: about 10 ms instead of seconds) and fall back to working in-process otherwise.
"""

from __future__ import annotations

import argparse
import logging
import sys
import threading
from collections.abc import Sequence
from typing import Any

import orjson

from regionsync.settings import Settings

log = logging.getLogger(__name__)


def register(subparsers: Any) -> None:
    p = subparsers.add_parser("serve", help="run one region's HTTP service (health, search, ask, dialog, metrics)")
    p.add_argument("--region", required=True, help="region to serve (one of REGIONSYNC_REGIONS)")
    p.add_argument("--host", help="listen address (env REGIONSYNC_SERVE_HOST)")
    p.add_argument("--port", type=int, help="port (default: REGIONSYNC_SERVE_BASE_PORT + the region's index)")
    p.set_defaults(func=cmd_serve)

    p = subparsers.add_parser("ask", help="an answer from a region's knowledge, citing its sources")
    p.add_argument("question", metavar="QUESTION")
    p.add_argument("--region", help="region to ask (default: first of REGIONSYNC_REGIONS)")
    p.add_argument("--k", type=int, default=5, help="passages retrieved (default: 5)")
    p.add_argument("--session", help="session id: the question and the answer become turns of that session")
    p.add_argument("--json", action="store_true", help="print the response as JSON")
    p.set_defaults(func=cmd_ask)

    region = subparsers.add_parser("region", help="the active region (the one that writes dialog turns)")
    sub = region.add_subparsers(dest="region_command", required=True)
    p = sub.add_parser("promote", help="make REGION active: a new epoch, its dialog state caught up to what it "
                                       "received, then it accepts turns")
    p.add_argument("region", metavar="REGION")
    p.add_argument("--force", action="store_true",
                   help="promote even while REGION's copy of the active region's log lags a source that answers "
                        "(what was not copied yet is set aside in the conflict report)")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_promote)
    p = sub.add_parser("conflicts", help="turns a promotion set aside (the conflict report), as REGION holds it")
    p.add_argument("region", metavar="REGION")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_conflicts)
    p = sub.add_parser("status", help="which region each region holds to be active")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_status)

    search = subparsers.choices.get("search")
    if search is not None:  # registered by indexer/cli.py: keep its flags and output, add the service path
        search.set_defaults(func=cmd_search)


def _print_json(data: Any) -> None:
    sys.stdout.write(orjson.dumps(data, option=orjson.OPT_INDENT_2).decode() + "\n")


def cmd_serve(args: argparse.Namespace, settings: Settings) -> int:
    import uvicorn

    from serve.app import create_app
    from serve.region import RegionService

    service = RegionService(settings, args.region)
    # Load the model while uvicorn starts (seconds; more on a busy machine), not on the first search.
    threading.Thread(target=service.embedder, name="load-model", daemon=True).start()
    app = create_app(service)
    host = args.host or settings.serve_host
    port = args.port or settings.serve_port(args.region)
    tls: dict[str, Any] = {}
    if settings.tls:
        from serve.tls import tls_files

        files = tls_files(settings)
        tls = {"ssl_certfile": str(files.cert), "ssl_keyfile": str(files.key)}
    log.info("region %s service on %s://%s:%d", args.region, "https" if tls else "http", host, port)
    try:
        uvicorn.run(app, host=host, port=port, log_level="warning", access_log=False, **tls)
    finally:
        service.close()
    return 0


def cmd_search(args: argparse.Namespace, settings: Settings) -> int:
    from indexer.cli import cmd_search as in_process
    from indexer.ports import Hit
    from indexer.search import print_hits
    from serve.client import RegionClient
    from serve.errors import ServeError

    region = args.region or settings.regions[0]
    client = RegionClient(settings, region)
    if not client.is_up():
        log.debug("region %s service not running: searching in-process", region)
        return int(in_process(args, settings))
    try:
        data = client.search(args.text, args.k)
    except ServeError as exc:
        print(f"regionsync: error: {exc}", file=sys.stderr)
        return 2
    hits = [
        Hit(doc_id=h["doc_id"], chunk_index=h["chunk"], title=h["title"], text=h["text"], score=h["score"],
            version=h["version"], source=h["source"], tags=tuple(h["tags"]))
        for h in data["hits"]
    ]
    print_hits(hits, f"region {region} (service)", args.text, args.json)
    return 0


def cmd_ask(args: argparse.Namespace, settings: Settings) -> int:
    from dialog.errors import DialogError
    from embedding.errors import EmbeddingError
    from indexer.errors import IndexerError
    from serve.client import RegionClient
    from serve.errors import ServeError

    region = args.region or settings.regions[0]
    client = RegionClient(settings, region)
    try:
        if client.is_up():
            data = client.ask(args.question, args.k, args.session)
        else:
            data = _ask_in_process(settings, region, args.question, args.k, args.session)
    except (ServeError, IndexerError, EmbeddingError, DialogError) as exc:  # in-process: the region's own errors
        print(f"regionsync: error: {exc}", file=sys.stderr)
        return 2
    if args.json:
        _print_json(data)
        return 0
    print(data["answer"])
    for src in data["sources"]:
        print(f"  [{src['n']}] {src['title']}  {src['label']}")
    return 0


def _ask_in_process(settings: Settings, region: str, question: str, k: int, session: str | None) -> dict[str, Any]:
    from serve.region import RegionService
    from serve.schemas import ask_response

    service = RegionService(settings, region, background=False)
    try:
        if session is not None:
            service.rejoin_now()
        if session is None:
            return ask_response(region, question, service.answer(question, k)).model_dump()
        result = service.turn(session, {"text": question, "intent": "knowledge"})
        assert result.answer is not None
        return ask_response(region, question, result.answer, session, result.reply.last_seq).model_dump()
    finally:
        service.close()


def register_dialog(dialog_commands: Any) -> None:
    """``regionsync dialog erase``: added to dialog/cli.py's group here, since it goes through a
    region's service (the dialog package does not know the service)."""
    p = dialog_commands.add_parser(
        "erase", help="erase a customer's conversation in every region (right to be forgotten)",
        description="Asks the active region's service (operator token) to publish the session's erasure: every "
        "region deletes the session's key, state and the snapshots holding it; the sealed events left in the "
        "log can no longer be read. A standby answers with the active region, which is then asked.")
    p.add_argument("session_id", metavar="SESSION_ID")
    p.add_argument("--reason", default="", help="a ticket reference, kept in clear in the log (no personal data)")
    p.add_argument("--region", help="region to ask first (default: the first of REGIONSYNC_REGIONS)")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_erase)


def cmd_erase(args: argparse.Namespace, settings: Settings) -> int:
    from serve.auth import OPERATOR
    from serve.client import RegionClient
    from serve.errors import ServeError

    region, asked = args.region or settings.regions[0], set()
    try:
        while True:
            asked.add(region)
            resp = RegionClient(settings, region).call("POST", f"/admin/sessions/{args.session_id}/erase", OPERATOR,
                                                       params={"reason": args.reason} if args.reason else None)
            body = _body(resp)
            active = body.get("active_region")
            if resp.status_code == 409 and isinstance(active, str) and active not in asked:
                region = active  # a standby: ask the active region
                continue
            break
    except ServeError as exc:
        print(f"regionsync: error: {exc}", file=sys.stderr)
        return 2
    if resp.status_code >= 400:
        print(f"regionsync: error: region {region}: HTTP {resp.status_code}: {body.get('detail')}", file=sys.stderr)
        return 2
    data = body
    if args.json:
        _print_json(data)
    else:
        print(f"session {data['session_id']} erased (by region {data['region']}, seq {data['seq']}"
              f"{'' if data['known'] else '; that region did not know it'}): every region deletes its key and state "
              "when it folds the erasure")
    return 0


def _body(resp: Any) -> dict[str, Any]:
    try:
        data = resp.json()
    except ValueError:
        return {"detail": resp.text[:200]}
    return data if isinstance(data, dict) else {"detail": data}


def cmd_promote(args: argparse.Namespace, settings: Settings) -> int:
    from serve.client import RegionClient
    from serve.errors import ServeError

    client = RegionClient(settings, args.region, timeout_s=settings.promote_timeout_s * 2 + 10)
    try:
        if client.is_up():
            data = client.promote(force=args.force)
        else:
            from serve.region import RegionService

            service = RegionService(settings, args.region, background=False)
            try:
                data = service.promote(force=args.force)
                service.publish_promotions()
            finally:
                service.close()
    except ServeError as exc:
        print(f"regionsync: error: {exc}", file=sys.stderr)
        return 2
    if args.json:
        _print_json(data)
    elif data["changed"]:
        print(f"region {data['active']} is active (epoch {data['epoch']}; was {data['previous']}); "
              f"its dialog state is at the end of the log")
    else:
        print(f"region {data['active']} was already active (epoch {data['epoch']})")
    return 0


def cmd_status(args: argparse.Namespace, settings: Settings) -> int:
    """Each region decides from its own database: show every region's view (they agree once
    replication has carried the last promotion everywhere)."""
    from serve.roles import RegionRole

    views: dict[str, Any] = {}
    for region in settings.regions:
        try:
            role = RegionRole(settings, region)
            try:
                active = role.current()
            finally:
                role.close()
            views[region] = {"active": active.region, "epoch": active.epoch, "previous": active.previous}
        except Exception as exc:  # noqa: BLE001 - a region that is down has no view: say so
            views[region] = {"error": str(exc).splitlines()[0]}
    agreed = {(v["active"], v["epoch"]) for v in views.values() if "active" in v}
    if args.json:
        _print_json({"regions": views, "agree": len(agreed) == 1})
        return 0
    for region, view in views.items():
        if "error" in view:
            print(f"{region:<8} unreachable: {view['error']}")
        else:
            print(f"{region:<8} holds: active {view['active']} (epoch {view['epoch']})")
    if len(agreed) > 1:
        print("the regions disagree: the newest promotion has not reached every region yet (replication lag or a "
              "cut link)")
    return 0


def cmd_conflicts(args: argparse.Namespace, settings: Settings) -> int:
    from dialog.keys import lookup
    from dialog.pg_store import PostgresStore

    store = PostgresStore.for_region(settings, args.region)
    try:
        fenced = store.fenced()
        keys = lookup(store.keyring.get_many({e.session_id for e in fenced}))
        report = [e.to_dict(keys) for e in fenced]
    finally:
        store.close()
    if args.json:
        _print_json(report)
        return 0
    if not report:
        print(f"region {args.region}: no turn was set aside")
    for e in report:
        print(f"{e['session_id']} seq {e['seq']} (written in {e['origin']} at epoch {e['epoch']}, offset "
              f"{e['source_offset']} of partition {e['partition']}): set aside by the promotion of "
              f"{e['fenced_region']} to epoch {e['fenced_epoch']}")
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m serve --region R``."""
    parser = argparse.ArgumentParser(prog="python -m serve", description="run one region's HTTP service")
    parser.add_argument("--region", required=True)
    parser.add_argument("--host")
    parser.add_argument("--port", type=int)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    return cmd_serve(args, Settings())
