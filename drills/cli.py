"""``regionsync reconcile`` and ``regionsync replay``. Wired into cli/main.py through :func:`register`.

Exit status of ``reconcile``: 0 every region equals the source; 1 drift was found (and, with
``--repair``, repaired); 3 drift remains after ``--repair``; 2 bad input or an error.
"""

from __future__ import annotations

import argparse
import logging
import signal
import sys
import threading
import time
from pathlib import Path
from typing import Any

import orjson

from drills.errors import BadInput, DrillsError
from drills.rate import parse_rate
from drills.timeparse import parse_duration, parse_time_ms
from regionsync.settings import Settings

log = logging.getLogger(__name__)

NO_DRIFT, DRIFT, DRIFT_REMAINS = 0, 1, 3


def register(subparsers: Any) -> None:
    p = subparsers.add_parser(
        "reconcile",
        help="compare every region with the source (table + CMS topic) document by document; --repair fixes drift",
    )
    p.add_argument("--region", help="only this region (default: every configured region, env REGIONSYNC_REGIONS)")
    p.add_argument("--repair", action="store_true",
                   help="re-drive drifted documents through the pipeline and wait until the regions match")
    p.add_argument("--json", action="store_true", help="print the report as JSON")
    p.add_argument("--every", metavar="DURATION", help="run again every DURATION (e.g. 24h): the daily full sync")
    p.add_argument("--timeout", type=float, default=300.0, help="seconds to wait for a repair to converge (300)")
    p.add_argument("--settle", type=float, default=2.0,
                   help="seconds before a second scan confirms drift (changes in flight are not drift) (2)")
    p.set_defaults(func=cmd_reconcile)

    p = subparsers.add_parser("replay", help="re-drive a topic range (by offset or time) into a topic or a region")
    p.add_argument("topic", help="source topic (document topics, the chunks topic, the dialog topic...)")
    p.add_argument("--partition", type=int, action="append", help="only this partition (repeatable; default all)")
    start = p.add_mutually_exclusive_group()
    start.add_argument("--from-offset", type=int, help="first offset (default: the beginning)")
    start.add_argument("--from-time", help="first record at or after this time (ISO 8601 or epoch ms)")
    end = p.add_mutually_exclusive_group()
    end.add_argument("--to-offset", type=int, help="end offset, exclusive (default: the end when the replay starts)")
    end.add_argument("--to-time", help="end at the first record at or after this time")
    target = p.add_mutually_exclusive_group(required=True)
    target.add_argument("--to-topic", help="produce the range to this topic")
    target.add_argument("--region", help="move this region's consumer back to the range start and let it re-apply")
    p.add_argument("--to-bootstrap", help="bootstrap servers of the target topic's cluster (default: the source's)")
    p.add_argument("--rate", help="at most N records per second, e.g. 200/s (topic target)")
    p.add_argument("--dry-run", action="store_true", help="print the counts per partition; change nothing")
    p.add_argument("--checkpoint", type=Path, help="checkpoint file (default: STATE_DIR/replay/<job>.json)")
    p.add_argument("--stop-consumer", action="store_true",
                   help="region target: stop the embedded stack's running indexer/dialog worker, move, start it again")
    p.add_argument("--no-wait", action="store_true", help="region target: do not wait for the region to re-apply")
    p.add_argument("--json", action="store_true", help="print the result as JSON")
    p.set_defaults(func=cmd_replay)

    p = subparsers.add_parser(
        "drill",
        help="failover drill on the embedded stack: fail the active region under load, promote the standby, "
             "measure detection, RTO, RPO; reconcile; failback",
    )
    p.add_argument("--fail", metavar="REGION", help="the region to fail (the active one)")
    p.add_argument("--cut-link", action="store_true",
                   help="instead of failing a region: stop replication between the regions (every replicator "
                        "paused) with both running, then restore it; lag, alert and catch-up are reported")
    p.add_argument("--cut-for", type=float, default=60.0, metavar="S", help="--cut-link: how long (60)")
    p.add_argument("--mode", choices=["kill", "freeze"], default="kill",
                   help="kill: SIGKILL every process of the region; freeze: SIGSTOP them (a hang) (kill)")
    p.add_argument("--scope", choices=["region", "services"], default="region",
                   help="region: everything the region owns (object store, broker, Postgres, Milvus, replicators, "
                        "workers; Connect and the change agent in the source region); services: its Milvus and "
                        "workers only (region)")
    p.add_argument("--probe-interval", type=float, default=10.0, metavar="S",
                   help="GSLB probe of every region's /readyz every S seconds (10)")
    p.add_argument("--probe-timeout", type=float, metavar="S",
                   help="a probe not answered within S seconds is a miss (default: min(2, interval))")
    p.add_argument("--misses", type=int, default=3, help="failure declared after this many misses in a row (3)")
    p.add_argument("--users", type=int, default=10, help="simulated customers holding conversations (10)")
    p.add_argument("--think", type=float, default=1.0, metavar="S", help="mean pause between a customer's turns (1)")
    p.add_argument("--doc-rate", type=float, default=1.0, metavar="N", help="document changes per second (1)")
    p.add_argument("--search-rate", type=float, default=2.0, metavar="N", help="searches per second (2)")
    p.add_argument("--warmup", type=float, default=10.0, metavar="S", help="workload before the failure (10)")
    p.add_argument("--after", type=float, default=10.0, metavar="S",
                   help="workload after every customer reached the new region (10)")
    p.add_argument("--max-outage", type=float, default=120.0, metavar="S",
                   help="stop waiting for customers to reach the new region after S seconds (120)")
    p.add_argument("--no-failback", action="store_true", help="leave the failed region down")
    p.add_argument("--seed", type=int, help="random seed (failure phase, workload)")
    p.add_argument("--json", type=Path, metavar="FILE", help="write the report as JSON")
    p.add_argument("--report", type=Path, metavar="FILE.html", help="write the report as an HTML page")
    p.add_argument("--show", type=Path, nargs="+", metavar="FILE",
                   help="print the table of saved reports (--json files) and exit; touches no stack")
    p.add_argument("--markdown", action="store_true", help="with --show: the table as Markdown")
    p.set_defaults(func=cmd_drill)

    from drills.faults import cli as faults_cli

    faults_cli.register(subparsers)


def _stop_event() -> threading.Event:
    stop = threading.Event()

    def handler(signum: int, _frame: Any) -> None:
        log.info("signal %d: stopping after the current batch", signum)
        stop.set()

    signal.signal(signal.SIGINT, handler)
    signal.signal(signal.SIGTERM, handler)
    return stop


def cmd_reconcile(args: argparse.Namespace, settings: Settings) -> int:
    from drills.reconcile import check_regions, reconcile, summary_lines

    check_regions(settings, args.region)  # bad input fails before the first round
    every = parse_duration(args.every) if args.every else None
    stop = _stop_event() if every else threading.Event()
    status = NO_DRIFT
    while True:
        started = time.monotonic()
        try:
            report = reconcile(settings, args.region, args.repair, settle_s=args.settle, timeout_s=args.timeout)
        except DrillsError:
            raise
        except Exception as exc:  # a daily job goes on after a failed round; a single run fails
            if every is None:
                raise
            log.error("reconcile round failed: %s", exc)
            status = 2
        else:
            if args.json:
                sys.stdout.write(orjson.dumps(report.to_dict(), option=orjson.OPT_INDENT_2).decode() + "\n")
            else:
                print("\n".join(summary_lines(report)))
            sys.stdout.flush()
            if not report.drift_found:
                status = NO_DRIFT
            elif report.remaining:
                status = DRIFT_REMAINS
            else:
                status = DRIFT
        if every is None or stop.wait(max(0.0, every - (time.monotonic() - started))):
            return status


def cmd_replay(args: argparse.Namespace, settings: Settings) -> int:
    from drills.replay import ReplayRequest, run

    req = ReplayRequest(
        topic=args.topic,
        partitions=tuple(args.partition) if args.partition else None,
        from_offset=args.from_offset,
        from_time_ms=parse_time_ms(args.from_time) if args.from_time else None,
        to_offset=args.to_offset,
        to_time_ms=parse_time_ms(args.to_time) if args.to_time else None,
        to_topic=args.to_topic,
        to_bootstrap=args.to_bootstrap,
        region=args.region,
        rate=parse_rate(args.rate) if args.rate else None,
        dry_run=args.dry_run,
        checkpoint=args.checkpoint,
        stop_consumer=args.stop_consumer,
        wait=not args.no_wait,
    )
    result = run(settings, req, _stop_event())
    if args.json:
        sys.stdout.write(orjson.dumps(result.to_dict(), option=orjson.OPT_INDENT_2).decode() + "\n")
        return 0
    verb = "would replay" if result.dry_run else "replayed"
    for r in result.ranges:
        print(f"{result.topic}[{r.partition}] {r.start}..{r.end}: {r.count} records")
    total = sum(r.count for r in result.ranges)
    if result.moved:
        print(f"{verb} {total} records into {result.target}: consumer moved to {result.moved}"
              + ("" if result.applied_to_end is None else f"; re-applied to the end: {result.applied_to_end}"))
    else:
        extra = f" ({result.sent} sent by this run{', resumed from its checkpoint' if result.resumed else ''})"
        print(f"{verb} {total} records into {result.target}" + ("" if result.dry_run else extra))
    return 0


def _show(paths: list[Path], markdown: bool) -> int:
    from drills import report

    reports = []
    for path in paths:
        try:
            data = orjson.loads(path.read_bytes())
        except (OSError, orjson.JSONDecodeError) as exc:
            raise BadInput(f"cannot read the drill report {path}: {exc}") from exc
        if not isinstance(data, dict) or "drill" not in data or "results" not in data:
            raise BadInput(f"{path} is not a failover drill's report (--json of `regionsync drill --fail`)")
        reports.append((path.stem, data))
    if markdown:
        print("\n".join(report.markdown_table(reports)))
    else:
        for name, data in reports:
            print("\n".join([f"{name}:", *report.summary_lines(data)]))
    return 0


def cmd_drill(args: argparse.Namespace, settings: Settings) -> int:
    """Exit status: 0 the drill passed its correctness checks (timing targets are reported, not
    judged here); 1 a check failed; 2 bad input or an error (nothing touched for bad input)."""
    if args.show:
        return _show(args.show, args.markdown)
    from drills import failover, report
    from drills.inject import Mode, Scope

    for path in (args.json, args.report):
        if path is not None and not path.resolve().parent.is_dir():
            raise BadInput(f"cannot write {path}: no directory {path.resolve().parent}")
    if args.cut_link:
        if args.fail:
            raise BadInput("--cut-link fails no region: leave out --fail")
        from drills import linkcut

        linkcut.check_running(settings)
        cut = linkcut.run(settings, cut_s=args.cut_for, users=args.users, warmup_s=args.warmup,
                          after_s=args.after, seed=args.seed or 0)
        if args.json:
            report.write_json(cut, args.json)
        print("\n".join(linkcut.summary_lines(cut)))
        return 0 if cut["verdict"]["ok"] else 1
    if not args.fail:
        raise BadInput("say which region to fail (--fail REGION), or --cut-link")
    opts = failover.DrillOptions(
        fail=args.fail, mode=Mode(args.mode), scope=Scope(args.scope), probe_interval_s=args.probe_interval,
        probe_timeout_s=args.probe_timeout,
        misses=args.misses, users=args.users, think_s=args.think, doc_rate=args.doc_rate,
        search_rate=args.search_rate, warmup_s=args.warmup, after_s=args.after, max_outage_s=args.max_outage,
        failback=not args.no_failback, seed=args.seed,
    )
    for path in (args.json, args.report):
        if path is not None and not path.resolve().parent.is_dir():
            raise BadInput(f"cannot write {path}: no directory {path.resolve().parent}")
    model = failover.run(settings, opts)
    if args.json:
        report.write_json(model, args.json)
    if args.report:
        report.write_html(model, args.report)
    print("\n".join(report.summary_lines(model)))
    return 0 if model["verdict"]["ok"] else 1
