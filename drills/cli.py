"""``regionsync reconcile`` and ``regionsync replay``. Wired into regionsync/cli.py through :func:`register`.

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

from drills.errors import DrillsError
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
