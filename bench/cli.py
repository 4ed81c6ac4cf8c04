"""``regionsync bench [--quick] [--json FILE]``: see :mod:`bench`."""

from __future__ import annotations

import argparse
import signal
import sys
from pathlib import Path
from typing import Any

from regionsync.settings import Settings


def register(sub: Any) -> None:
    p = sub.add_parser(
        "bench",
        help="measure the pipeline against its embedding limit and against LangChain's indexing API",
        description="Starts its own embedded stack (temporary state dir, free ports), runs every measurement, "
        "prints the table and stops the stack. The full run takes about 30 minutes on 2 cores.",
    )
    p.add_argument("--quick", action="store_true", help="small corpus and short phases: a smoke check (< 2 min)")
    p.add_argument("--json", type=Path, metavar="FILE", help="also write every figure to FILE (JSON)")
    p.add_argument("--docs", type=int, help="documents to load (default 20,000; --quick 120)")
    p.add_argument("--freshness-seconds", type=float, help="length of the freshness load (default 60; --quick 8)")
    p.add_argument("--dialog-sessions", type=int, help="sessions for the dialog rebuild (default 10,000; --quick 1,000)")
    p.add_argument("--profile", type=Path, metavar="DIR",
                   help="sample the pipeline's processes with py-spy during each phase; raw stacks go to DIR")
    p.add_argument("--state-dir", type=Path, help="state dir for the bench's stack (default: a new temporary dir)")
    p.add_argument("--keep-state", action="store_true", help="keep the stack's state dir and logs afterwards")
    p.add_argument("--show", type=Path, metavar="FILE", help="print the table of a saved run and exit")
    p.add_argument("--markdown", action="store_true", help="with --show: print the table as Markdown")
    p.set_defaults(func=run)


def interrupted(signum: int, frame: Any) -> None:
    """SIGTERM as Ctrl-C: raise, so a run's cleanup stops its stack."""
    raise KeyboardInterrupt(f"signal {signum}")


def raise_on_stop_signals() -> None:
    """Ctrl-C and SIGTERM (even in the background, where SIGINT is ignored by default) raise
    KeyboardInterrupt, so a run's cleanup stops its stack and profilers (the fault suite uses it too)."""
    signal.signal(signal.SIGINT, signal.default_int_handler)
    signal.signal(signal.SIGTERM, interrupted)


def run(args: argparse.Namespace, settings: Settings) -> int:
    from bench import report

    if args.show:
        saved = report.load(args.show)
        print(report.markdown(saved) if args.markdown else report.render(saved))
        return 0
    from bench.options import BenchOptions
    from bench.runner import run as run_bench

    options = BenchOptions(
        quick=args.quick, docs=args.docs, freshness_s=args.freshness_seconds, dialog_sessions=args.dialog_sessions,
        profile_dir=args.profile, state_dir=args.state_dir, keep_state=args.keep_state,
    )
    raise_on_stop_signals()
    results = run_bench(settings, options, say=lambda msg: print(msg, file=sys.stderr, flush=True))
    if args.json:
        report.save(results, args.json)
    print(report.render(results))
    # Every row is in the table either way; a failed row makes the exit status say so.
    return 1 if report.failed_rows(results) else 0
