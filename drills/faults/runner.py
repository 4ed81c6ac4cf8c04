"""Run the chosen scenarios on a stack of the suite's own and collect the results.

The stack is the embedded default (``stack``) in a new state directory on free ports,
with secrets made up for the run (random, so the secrets scan cannot miss one that leaked: a
default password could appear by coincidence), started once; the scenarios run one after the
other, their trials in turn. After each trial every process the stack runs is checked and any
that is gone is started again (and said so in the trial's notes), so one scenario's damage does
not become the next one's failure.
"""

from __future__ import annotations

import datetime as dt
import logging
import secrets
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

from pydantic import SecretStr

from drills.errors import BadInput
from drills.faults.checks import LogFolder, wait_converged
from drills.faults.context import FaultContext, Load
from drills.faults.figures import summarise
from drills.faults.model import TrialResult
from drills.faults.plan import plan_trials
from drills.faults.registry import ORDER, build
from drills.faults.scenario import Scenario
from regionsync.revision import code_revision
from regionsync.settings import Settings

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class FaultOptions:
    scenarios: tuple[str, ...] = ()  # empty: every scenario
    trials: int | None = None  # per scenario (default: each scenario's own, full or quick)
    quick: bool = False
    seed: int = 11
    state_dir: Path | None = None
    keep_state: bool = False
    load: Load = field(default_factory=Load)
    converge_timeout_s: float = 240.0


def select(names: Sequence[str]) -> list[str]:
    unknown = [n for n in names if n not in ORDER]
    if unknown:
        raise BadInput(f"unknown scenario {', '.join(unknown)}; known: {', '.join(ORDER)}")
    wanted = set(names) or set(ORDER)
    return [n for n in ORDER if n in wanted]  # the suite's order: destructive ones last


def suite_settings(settings: Settings) -> Settings:
    """Secrets nobody could type by accident, so the scan proves none leaked."""
    return settings.model_copy(update={
        "pg_password": SecretStr(f"pg-{secrets.token_hex(10)}"),
        "api_tokens": SecretStr(f"assistant:asst-{secrets.token_hex(12)},operator:oper-{secrets.token_hex(12)}"),
        "s3_access_key_id": SecretStr(f"AKIA{secrets.token_hex(8).upper()}"),
        "s3_secret_access_key": SecretStr(f"s3-{secrets.token_hex(16)}"),
    })


def run(base: Settings, options: FaultOptions, say: Callable[[str], None] = print,
        save: Callable[[dict[str, Any]], None] | None = None) -> dict[str, Any]:
    """Run the suite; ``save`` gets the results after every trial (``"partial": true`` until the
    end), so a run that is stopped or dies still leaves its figures and every trial's problems."""
    from bench.runner import machine_info
    from bench.stackrun import BenchStack

    names = select(options.scenarios)
    scenarios = [build(n) for n in names]
    for scenario in scenarios:
        scenario.quick = options.quick
    bench = BenchStack.create(base, options.state_dir)
    bench.settings = suite_settings(bench.settings)
    s = bench.settings
    code = code_revision()
    results: dict[str, Any] = {
        "commit": code["commit"], "code": code,
        "started": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        "seed": options.seed,
        "quick": options.quick,
        "machine": machine_info(),
        "workload": asdict(options.load),
        "state_dir": str(s.state_dir),
        "scenarios": [],
    }
    t_start = time.monotonic()
    ctx = FaultContext(s, options.load, say, options.converge_timeout_s)

    def progress(row: dict[str, Any]) -> None:
        rows = results["scenarios"]
        if rows and rows[-1]["name"] == row["name"]:
            rows[-1] = row
        else:
            rows.append(row)
        results["seconds"], results["partial"] = round(time.monotonic() - t_start, 1), True
        if save is not None:
            save(results)

    try:
        say(f"faults: starting the stack in {s.state_dir}")
        start_stack(s)
        folder = LogFolder(s)
        _settle(ctx, folder)
        for scenario in scenarios:
            row = run_scenario(ctx, scenario, options, folder, progress)
            progress(row)
            if "aborted" in row:  # the figures so far are kept and saved; the rest did not run
                results["aborted"] = row["aborted"]
                results["not_run"] = [sc.name for sc in scenarios[scenarios.index(scenario) + 1:]]
                break
        results.pop("partial", None)
    finally:
        results["seconds"] = round(time.monotonic() - t_start, 1)
        bench.stop(keep_state=options.keep_state)
    return results


def start_stack(settings: Settings) -> None:
    """Infrastructure, workers, then the connector (tried again on a slow Connect)."""
    from stack import stack

    stack.start_infra(settings)
    stack.start_workers(settings)
    stack.apply_connector(settings, attempts=3)


def _settle(ctx: FaultContext, folder: LogFolder) -> None:
    """One short warm-up load (model loaded, groups joined, a session in each region)."""
    ctx.say("faults: warm-up")
    wl = ctx.workload(seed=0, run_id="warmup")
    time.sleep(5)
    load = wl.stop()
    end = wait_converged(ctx.settings, folder, load, ctx.converge_timeout_s)
    if not end.converged:
        ctx.say(f"faults: the warm-up did not converge: {end.lost[:3]} {end.stale_docs[:3]} {end.sessions.differing[:3]}")


def run_scenario(ctx: FaultContext, scenario: Scenario, options: FaultOptions, folder: LogFolder,
                 progress: Callable[[dict[str, Any]], None] | None = None) -> dict[str, Any]:
    n = options.trials or (scenario.quick_trials if options.quick else scenario.full_trials)
    timing = (scenario.quick_timing or scenario.timing) if options.quick else scenario.timing
    plans = plan_trials(scenario.name, n, options.seed, timing, scenario.targets(ctx))
    trials: list[TrialResult] = []
    for plan in plans:
        ctx.say(f"faults: {scenario.name} trial {plan.index + 1}/{n} "
                f"(fault after {plan.fault_after_s:.1f}s for {plan.fault_s:.1f}s{', ' + plan.target if plan.target else ''})")
        started = time.monotonic()
        try:
            result = scenario.run_trial(ctx, plan, folder)
        except Exception as exc:  # noqa: BLE001 - one broken trial is a row entry, not the end of the suite
            log.exception("%s trial %d failed", scenario.name, plan.index)
            result = TrialResult(plan, 1, 0, 0, 0, None, error=f"{type(exc).__name__}: {exc}"[:500])
        try:
            restarted = heal_stack(ctx)
        except Exception as exc:  # noqa: BLE001 - reported in the row; the suite cannot go on without its stack
            log.exception("%s trial %d: the stack could not be restarted", scenario.name, plan.index)
            why = f"the stack could not be restarted: {type(exc).__name__}: {exc}"[:500]
            result = replace(result, error=f"{result.error}; {why}" if result.error else why)
            trials.append(result)
            aborted = f"{scenario.name} trial {plan.index + 1}: the stack could not be restarted: {exc}"[:1000]
            ctx.say(f"faults: {aborted}; the suite stops here")
            return _row(scenario, trials) | {"aborted": aborted}
        if restarted:
            result.notes["restarted_after_trial"] = restarted
        result.notes["trial_seconds"] = round(time.monotonic() - started, 1)
        ctx.say(f"faults: {scenario.name} trial {plan.index + 1}: lost {result.lost}, stale {result.stale}, "
                f"duplicates {result.duplicates}, converged in "
                f"{'-' if result.converge_s is None else f'{result.converge_s:.1f}s'}"
                + ("" if result.availability is None else f", turns/s in fault vs before {result.availability:.2f}")
                + (f", error: {result.error}" if result.error else "")
                + ("" if result.converge_s is not None or result.error else f"; still wrong: {_why(result)}"))
        trials.append(result)
        if progress is not None:
            progress(_row(scenario, trials))
    return _row(scenario, trials)


def _why(result: TrialResult) -> str:
    """The first few things a trial that did not converge still found wrong."""
    found = [*result.problems, *(f"lost {v}" for v in result.lost_detail), *(f"stale {d}" for d in result.stale_detail)]
    return "; ".join(found[:3]) or "nothing recorded"


def _row(scenario: Scenario, trials: list[TrialResult]) -> dict[str, Any]:
    return {
        "name": scenario.name,
        "description": scenario.summary,
        "summary": summarise(scenario.name, trials),
        "note": scenario.note(trials),
        "trials": [t.to_dict() for t in trials],
    }


def heal_stack(ctx: FaultContext) -> list[str]:
    """Start every process of the stack that is not running; the names of those started."""
    from drills import inject

    names = dict.fromkeys(n for r in ctx.settings.regions
                          for n in inject.region_workers(ctx.settings, r, inject.Scope.REGION))
    missing = [name for name in names if inject.main_pid(ctx.settings, name) is None]
    if missing:
        log.warning("after the trial these were not running: %s; starting them", ", ".join(missing))
        inject.restart(ctx.settings, missing)
    return missing
