"""``regionsync faults``: the fault suite (see drills/faults/__init__.py)."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

from regionsync.settings import Settings


def register(sub: Any) -> None:
    p = sub.add_parser(
        "faults",
        help="the fault suite: kill, stop and poison the pipeline many times under load and count what is lost",
        description="Starts its own embedded stack (temporary state dir, free ports, made-up secrets), runs each "
        "scenario's trials at random moments drawn from --seed under a live workload, ends every trial by comparing "
        "every region with the source and every session with the dialog log, prints one row per scenario and "
        "stops the stack. Exit status 0 when every scenario lost nothing, left nothing stale and converged.",
    )
    p.add_argument("--scenario", action="append", default=[], metavar="NAME",
                   help="run this scenario (repeatable; default: all, see --list)")
    p.add_argument("--trials", type=int, help="trials per scenario (default: each scenario's own; --quick: 1)")
    p.add_argument("--quick", action="store_true", help="one short trial per scenario, a small storm: a smoke check")
    p.add_argument("--seed", type=int, default=11, help="seed of the trial plans (the moments faults strike) (11)")
    p.add_argument("--json", type=Path, metavar="FILE", help="also write every figure and trial to FILE (JSON)")
    p.add_argument("--converge-timeout", type=float, default=240.0,
                   help="seconds a trial waits for every region and session to match (240)")
    p.add_argument("--state-dir", type=Path, help="state dir for the suite's stack (default: a new temporary dir)")
    p.add_argument("--keep-state", action="store_true", help="keep the stack's state dir and logs afterwards")
    p.add_argument("--list", action="store_true", help="list the scenarios and exit")
    p.add_argument("--show", type=Path, action="append", metavar="FILE",
                   help="print the table of a saved run and exit (repeat for a run made in parts: one table)")
    p.add_argument("--markdown", action="store_true", help="with --show: print the table as Markdown")
    p.set_defaults(func=run)


def run(args: argparse.Namespace, settings: Settings) -> int:
    from drills.faults import table
    from drills.faults.registry import describe

    if args.list:
        for name, summary, trials in describe():
            print(f"{name:<18} {trials:>3} trials  {summary}")
        return 0
    if args.show:
        parts = [table.load(path) for path in args.show]
        saved = parts[0] if len(parts) == 1 else table.combine(parts)
        print(table.markdown(saved) if args.markdown else table.render(saved))
        return 0 if table.all_ok(saved) else 1
    from drills.faults.runner import FaultOptions, select
    from drills.faults.runner import run as run_suite

    chosen = select(args.scenario)  # unknown names fail before a stack is started
    if "poison-storm" in chosen:
        import importlib.util

        if importlib.util.find_spec("hypothesis") is None:
            from drills.errors import BadInput

            raise BadInput("the poison storm generates its events with hypothesis: pip install 'regionsync[faults]' "
                           "(scripts/setup.sh installs it), or leave it out with --scenario")
    if args.trials is not None and args.trials < 1:
        from drills.errors import BadInput

        raise BadInput("--trials must be at least 1")
    options = FaultOptions(
        scenarios=tuple(args.scenario), trials=args.trials, quick=args.quick, seed=args.seed,
        state_dir=args.state_dir, keep_state=args.keep_state, converge_timeout_s=args.converge_timeout,
    )
    from bench.cli import raise_on_stop_signals

    raise_on_stop_signals()  # Ctrl-C or SIGTERM: the runner's cleanup stops the suite's stack
    json_file = args.json
    results = run_suite(settings, options, say=lambda msg: print(msg, file=sys.stderr, flush=True),
                        save=None if json_file is None else lambda partial: table.save(partial, json_file))
    if args.json:
        table.save(results, args.json)
    print(table.render(results))
    return 0 if table.all_ok(results) else 1
