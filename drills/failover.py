"""``regionsync drill --fail REGION``: a regional failover, practised on the running embedded stack.

The steps, in order (each recorded with its time):

1. checks before anything is touched (:func:`check_options`, :func:`preflight`): a configured
   region that is the active one, a standby that is ready, sane intervals, every process of the
   region running; otherwise :class:`drills.errors.BadInput` and nothing has changed;
2. a live workload (drills/workload.py) and the GSLB's prober (drills/prober.py) start; the drill
   waits until the customers have answers from the active region;
3. the failure (drills/inject.py), at a random phase of the probe schedule: every process of the
   region killed or frozen (``--scope region``, the default: its object store, broker, Postgres,
   Milvus, replicators and workers, and Connect and the change agent when it is the source region;
   ``--scope services``: only its Milvus and workers). The replication lag into the standby is
   read from its replicator just before;
4. when the prober declares the region down, the standby is promoted through its service
   (``POST /admin/promote``: the dialog state is brought to the end of the log first); the
   customers find it by themselves (a failed region makes them move, the standby's 409 names
   the active region);
5. once every customer has had an answer from the new region (or ``max_outage_s`` passed), the
   workload runs ``after_s`` more and stops;
6. the new region is checked: the turns acknowledged and the document versions committed that
   it lacks (the RPO), its sessions against a fold of its logs (drills/dialoglog.py), the
   knowledge version it serves while the source region is down, and (when the source is alive)
   reconciled with the source;
7. failback: the failed region's processes are started again; it comes back as a standby
   (it learns the promotion from the new active region's control topic), its late turns cross to
   the new region and are set aside there (the conflict report: drills lists them as the turns
   that were not replicated, which must be exactly the acknowledged turns lost), it catches up,
   and every region is reconciled with the source.

If anything fails after the failure was injected, the region's processes are started again
before the error propagates, so the stack is not left broken.
"""

from __future__ import annotations

import logging
import math
import os
import random
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass, field
from typing import Any

import requests

from drills import failover_checks, inject, measure, report
from drills.errors import BadInput, DrillsError
from drills.gslb import Health, Transition
from drills.inject import Mode, Scope
from drills.prober import Prober
from drills.workload import Workload
from drills.workload_model import WorkloadConfig, WorkloadResult
from regionsync.revision import code_revision
from regionsync.settings import Settings
from serve.tls import verify
from stack import host

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class DrillOptions:
    fail: str
    mode: Mode = Mode.KILL
    scope: Scope = Scope.REGION
    probe_interval_s: float = 10.0
    probe_timeout_s: float | None = None  # default: min(2 s, the interval)
    misses: int = 3
    users: int = 10
    think_s: float = 1.0
    doc_rate: float = 1.0
    search_rate: float = 2.0
    warmup_s: float = 10.0  # workload before the failure
    after_s: float = 10.0  # workload after every customer reached the new region
    max_outage_s: float = 120.0  # give up waiting for customers this long after the failure
    failback: bool = True
    seed: int | None = None
    run_id: str = field(default_factory=lambda: os.urandom(4).hex())

    @property
    def timeout_s(self) -> float:
        return self.probe_timeout_s if self.probe_timeout_s is not None else min(2.0, self.probe_interval_s)


def check_options(settings: Settings, opts: DrillOptions) -> None:
    """Bad input, found without touching anything."""
    if opts.fail not in settings.regions:
        raise BadInput(f"unknown region {opts.fail!r}; configured regions: {', '.join(settings.regions)}")
    if len(settings.regions) < 2:
        raise BadInput(f"region {opts.fail} is the only region: there is no standby to fail over to")

    def positive(name: str, value: float, upper: float | None = None) -> None:
        if not (isinstance(value, int | float) and math.isfinite(value) and value > 0):
            raise BadInput(f"{name} must be a positive number of seconds, got {value!r}")
        if upper is not None and value > upper:
            raise BadInput(f"{name} must be at most {upper:g} s, got {value:g}")

    positive("--probe-interval", opts.probe_interval_s, 300)
    if opts.probe_timeout_s is not None:
        positive("--probe-timeout", opts.probe_timeout_s)
        if opts.probe_timeout_s > opts.probe_interval_s:
            raise BadInput(f"--probe-timeout ({opts.probe_timeout_s:g} s) must not exceed --probe-interval "
                           f"({opts.probe_interval_s:g} s): a probe would overlap the next one")
    if not 1 <= opts.misses <= 100:
        raise BadInput(f"--misses must be between 1 and 100, got {opts.misses}")
    if not 1 <= opts.users <= 500:
        raise BadInput(f"--users must be between 1 and 500, got {opts.users}")
    positive("--think", opts.think_s, 60)
    positive("--warmup", opts.warmup_s, 3600)
    positive("--after", opts.after_s, 3600)
    positive("--max-outage", opts.max_outage_s, 3600)
    for name, rate in (("--doc-rate", opts.doc_rate), ("--search-rate", opts.search_rate)):
        if not (math.isfinite(rate) and 0 <= rate <= 100):
            raise BadInput(f"{name} must be between 0 and 100 per second, got {rate!r}")


def preflight(settings: Settings, opts: DrillOptions) -> str:
    """Read-only checks on the running stack; returns the region to promote."""
    states: dict[str, dict[str, Any]] = {}
    for region in settings.regions:
        try:
            resp = requests.get(f"{settings.serve_url(region)}/readyz", timeout=10, verify=verify(settings))
            states[region] = {"ready": resp.status_code == 200, **resp.json()}
        except (requests.RequestException, ValueError) as exc:
            states[region] = {"ready": False, "role": None, "error": str(exc)}
    failing = states[opts.fail]
    if failing.get("role") is None:
        raise BadInput(f"region {opts.fail}'s service does not answer at {settings.serve_url(opts.fail)} "
                       f"(is the stack up? `regionsync stack up`): {failing.get('error', '')}")
    if failing["role"] != "active":
        active = [r for r, s in states.items() if s.get("role") == "active"]
        raise BadInput(f"region {opts.fail} is a standby (active: {', '.join(active) or 'none'}); "
                       "a failover drill fails the active region")
    standbys = [r for r in settings.regions if r != opts.fail]
    ready = [r for r in standbys if states[r]["ready"] and states[r].get("role") == "standby"]
    if not ready:
        why = "; ".join(f"{r}: {_why_not_ready(states[r])}" for r in standbys)
        raise BadInput(f"region {opts.fail} is the only active region and no standby is ready to take over ({why})")
    missing = [n for n in inject.region_workers(settings, opts.fail, opts.scope) if inject.main_pid(settings, n) is None]
    if missing:
        raise BadInput(f"region {opts.fail} is not whole: {', '.join(missing)} not running (`regionsync stack up`)")
    return ready[0]


def _why_not_ready(state: Mapping[str, Any]) -> str:
    if state.get("error"):
        return f"no answer ({state['error']})"
    bad = [name for name, c in (state.get("checks") or {}).items() if not c.get("ok")]
    return "not ready: " + (", ".join(bad) or "?")


class _Flag:
    """The moment the prober declared the failed region down."""

    def __init__(self, region: str) -> None:
        self.region = region
        self.event = threading.Event()
        self.transition: Transition | None = None

    def __call__(self, t: Transition) -> None:
        if t.region == self.region and t.health is Health.DOWN and self.transition is None:
            self.transition = t
            self.event.set()


def run(settings: Settings, opts: DrillOptions, clock: Callable[[], float] = time.time) -> dict[str, Any]:
    """The whole drill; returns the report model (drills/report.py)."""
    check_options(settings, opts)
    new_region = preflight(settings, opts)
    rng = random.Random(opts.seed)
    load_before = os.getloadavg()
    started = clock()
    flag = _Flag(opts.fail)
    urls = {r: settings.serve_url(r) for r in settings.regions}
    prober = Prober(urls, opts.probe_interval_s, opts.timeout_s, opts.misses, flag, clock, verify=verify(settings))
    workload = Workload(settings, WorkloadConfig(
        regions=tuple(settings.regions), start_region=opts.fail, users=opts.users, think_s=opts.think_s,
        doc_rate=opts.doc_rate, search_rate=opts.search_rate, seed=rng.randrange(1 << 30), run_id=opts.run_id,
    ), urls=urls, clock=clock)
    fault: inject.Fault | None = None
    times: dict[str, float | None] = {"promote_started_at": None, "promoted_at": None}
    promotion: dict[str, Any] = {}
    lag_at_failure: dict[str, Any] = {}
    knowledge: dict[str, Any] = {}
    source_down = opts.scope is Scope.REGION and opts.fail == settings.source_region
    prober.start()
    workload.start()
    try:
        _warm_up(workload, opts)
        time.sleep(rng.uniform(0, opts.probe_interval_s))  # a random phase of the probe schedule
        lag_at_failure = failover_checks.replication_lag(settings, opts.fail, new_region)
        log.info("drill: failing region %s (%s, scope %s)", opts.fail, opts.mode.value, opts.scope.value)
        fault = inject.fail_region(settings, opts.fail, opts.mode, clock, scope=opts.scope)
        if not flag.event.wait(opts.misses * opts.probe_interval_s + opts.timeout_s + 60):
            raise DrillsError(f"the prober never declared region {opts.fail} down")
        times["promote_started_at"] = clock()
        promotion = _promote(settings, new_region, opts)
        times["promoted_at"] = clock()
        if source_down:
            knowledge = failover_checks.knowledge_served(settings, new_region)
        _wait_moved(workload, opts, new_region, fault.at, clock)
        time.sleep(opts.after_s)
    except BaseException:
        workload.stop()
        prober.stop()
        if fault is not None:
            log.error("drill failed after the failure was injected: starting region %s again", opts.fail)
            inject.restart_region(settings, opts.fail, clock, scope=opts.scope)
        raise
    result = workload.stop()
    probes, transitions = prober.stop()
    log.info("drill: workload stopped (%d turns acknowledged); checking %s", len(result.acks), new_region)
    try:
        checks = failover_checks.check_new_region(settings, new_region, result, clock, wait_docs=not source_down)
        surviving = ({"skipped": f"the source region {opts.fail} is down: the regions are compared with it at the "
                                 "end, after the failback"} if source_down
                     else failover_checks.reconcile_all(settings, [r for r in settings.regions if r != opts.fail], repair=False))
    finally:
        failback = failover_checks.failback(settings, opts.fail, opts.scope, new_region, result, clock) if opts.failback else None
    final = failover_checks.reconcile_all(settings, list(settings.regions), repair=True) if opts.failback else None
    model = _model(settings, opts, new_region, started, fault, times, promotion, result, probes, transitions,
                   checks, surviving, final, failback, load_before, os.getloadavg())
    model["replication"] = {"lag_at_failure": lag_at_failure, "ack_mode": settings.dialog_ack_mode}
    model["code"] = code_revision()
    model["commit"] = model["code"]["commit"]
    model["knowledge"] = knowledge or None
    model["verdict"] = report.verdict(model)
    model["targets"] = report.targets(model)
    return model


def _warm_up(workload: Workload, opts: DrillOptions) -> None:
    """The workload runs ``warmup_s``, and at least until every customer had one answer."""
    deadline = time.monotonic() + max(opts.warmup_s, 0) + 120
    time.sleep(opts.warmup_s)
    while len({a.customer for a in workload.snapshot().acks}) < opts.users:
        if time.monotonic() > deadline:
            snap = workload.snapshot()
            raise DrillsError(f"the customers get no answers from region {opts.fail} before the failure "
                              f"({len(snap.acks)} turns acknowledged; errors: {snap.errors[:3]})")
        time.sleep(0.2)


def _promote(settings: Settings, region: str, opts: DrillOptions) -> dict[str, Any]:
    """POST /admin/promote on the new region, again on a 503 (not caught up yet) until it works."""
    from serve.client import RegionClient
    from serve.errors import ServeError

    client = RegionClient(settings, region, timeout_s=settings.promote_timeout_s * 2 + 10)
    deadline = time.monotonic() + settings.promote_timeout_s * 2 + 30
    while True:
        try:
            out: dict[str, Any] = client.promote()
            log.info("drill: region %s promoted (epoch %s)", region, out.get("epoch"))
            return out
        except ServeError as exc:
            if time.monotonic() > deadline:
                raise DrillsError(f"promoting region {region} failed: {exc}") from exc
            log.warning("drill: promoting %s: %s; again", region, exc)
            time.sleep(0.5)


def _wait_moved(workload: Workload, opts: DrillOptions, new_region: str, fail_at: float, clock: Callable[[], float]) -> None:
    while clock() - fail_at < opts.max_outage_s:
        moved = {a.customer for a in workload.snapshot().acks if a.region == new_region and a.acked_at >= fail_at}
        if len(moved) >= opts.users:
            return
        time.sleep(0.2)
    log.warning("drill: not every customer reached %s within %.0f s", new_region, opts.max_outage_s)


# ---------------------------------------------------------------------------- the report model


def machine() -> dict[str, Any]:
    return host.machine()


def _model(
    settings: Settings, opts: DrillOptions, new_region: str, started: float, fault: inject.Fault | None,
    times: Mapping[str, float | None], promotion: Mapping[str, Any], result: WorkloadResult, probes: list[Any],
    transitions: list[Transition], checks: failover_checks.RegionChecks, surviving: dict[str, Any], final: dict[str, Any] | None,
    failback: dict[str, Any] | None, load_before: tuple[float, ...], load_after: tuple[float, ...],
) -> dict[str, Any]:
    assert fault is not None
    detected = next((t for t in transitions if t.region == opts.fail and t.health is Health.DOWN), None)
    rec = measure.recovery(result.acks, opts.fail, new_region, fault.at, detected.at if detected else None,
                           times["promote_started_at"], times["promoted_at"])
    custs = measure.customers(opts.users, result.acks, result.outages, new_region, fault.at, result.stopped_at)
    before = [p.at for p in probes if p.region == opts.fail and p.at <= fault.at]
    outage_end = rec.first_good_new or result.stopped_at
    m = machine()
    m["load_before"] = [round(x, 2) for x in load_before]
    m["load_after"] = [round(x, 2) for x in load_after]
    m["description"] = (f"{m['cpu']}, {m['cores']} cores, {m['memory_gb']} GB; load average {m['load_before'][0]} "
                        f"before, {m['load_after'][0]} after; the whole embedded stack on the same machine")
    acks_by_customer: dict[int, dict[str, list[float]]] = {}
    for a in result.acks:
        acks_by_customer.setdefault(a.customer, {}).setdefault(a.region, []).append(a.acked_at)
    return {
        "drill": {
            "failed_region": opts.fail, "new_region": new_region, "mode": opts.mode.value,
            "scope": opts.scope.value, "source_region": settings.source_region,
            "ack_mode": settings.dialog_ack_mode,
            "regions": list(settings.regions), "probe_interval_s": opts.probe_interval_s,
            "probe_timeout_s": opts.timeout_s, "misses": opts.misses, "users": opts.users, "think_s": opts.think_s,
            "doc_rate": opts.doc_rate, "search_rate": opts.search_rate, "run_id": opts.run_id,
            "fail_phase_s": fault.at - max(before) if before else 0.0,
        },
        "machine": m,
        "timeline": {
            "started_at": started, "fail_at": fault.at, "fault_done_at": fault.done_at,
            "detected_at": rec.detected_at, "promote_started_at": rec.promote_started_at,
            "promoted_at": rec.promoted_at, "last_good_failed": rec.last_good_failed,
            "first_good_new": rec.first_good_new, "stopped_at": result.stopped_at,
        },
        "fault": fault.to_dict(),
        "promotion": dict(promotion),
        "results": {
            "recovery": asdict(rec),
            "customers": {k: v for k, v in asdict(custs).items() if k != "customers"},
            "rpo": {
                "acknowledged_turns": checks.turns.acknowledged, "turns_lost": len(checks.turns.missing),
                "missing_turns": list(checks.turns.missing), "doc_changes": checks.docs.changes,
                "documents": checks.docs.documents, "docs_missing": len(checks.docs.missing),
                "missing_docs": list(checks.docs.missing), "docs_complete_after_s": checks.docs_complete_after_s,
            },
            "sessions": {
                "held": checks.sessions.sessions, "folded": checks.sessions.folded,
                "differing": list(checks.sessions.differing), "absent": list(checks.sessions.absent),
                "log_events": checks.log_events, "views_checked": checks.views_checked,
                "views_differing": list(checks.views_differing),
            },
            "search": {
                "drill": asdict(measure.search_stats(result.searches)),
                "outage": asdict(measure.search_stats(result.searches, fault.at, outage_end)),
                # The new region answered searches after the failure, its hits naming their sources.
                "new_region_cited_after_failure": sum(
                    1 for x in result.searches if x.region == new_region and x.at >= fault.at and x.ok and x.cited),
            },
            "workload_errors": list(result.errors),
        },
        "reconcile": {"surviving": surviving, "final": final},
        "failback": failback,
        "customers": [
            {**asdict(c), "acks": acks_by_customer.get(c.customer, {})} for c in custs.customers
        ],
        "probes": [asdict(p) for p in probes],
        "transitions": [{**asdict(t), "health": t.health.value} for t in transitions],
        "searches": [asdict(s) for s in result.searches],
        "attempts": [asdict(a) for a in result.attempts],
    }
