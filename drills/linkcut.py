"""``regionsync drill --cut-link``: replication between the regions stopped for a while, both
regions running, under a live workload.

The link is cut by pausing every replicator (``regionsync mirror pause``: a replicator copies
nothing while paused and keeps measuring how far behind it is). The embedded stack runs every
region on one machine, so no network link can be cut between them; what the drill shows is the
same from the regions' side: no record crosses, the active region keeps taking turns (``local``
acknowledgements) or refuses them (``mirrored``: no standby can confirm), the replication lag
grows, Prometheus' "RPO at risk" alert fires, and when the link is back every region catches up:
its sessions equal the fold of its logs and each other's, and every region equals the source.

The report (JSON) holds the lag sampled every second (records and seconds, per direction), when
the alert fired and resolved, how long the catch-up took, and the checks.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import requests

from drills import dialoglog, measure
from drills.errors import BadInput, DrillsError
from drills.failover import machine
from drills.failover_checks import wait_replicated
from drills.workload import Workload
from drills.workload_model import WorkloadConfig, WorkloadResult
from mirror.checkpoints import set_paused
from mirror.status import inbound
from regionsync.pgdb import region_dsn
from regionsync.revision import code_revision
from regionsync.settings import Settings
from serve.roles import active_region
from stack import prometheus

log = logging.getLogger(__name__)

ALERT = "ReplicationLagHigh"


def _pause_all(settings: Settings, paused: bool) -> None:
    for source, target in settings.mirror_pairs():
        set_paused(region_dsn(settings, target), source, paused, "drill: link cut" if paused else "")


def _lag(settings: Settings) -> dict[str, dict[str, Any]]:
    out: dict[str, dict[str, Any]] = {}
    for target in settings.regions:
        for source, row in inbound(settings, target).items():
            out[f"{source}->{target}"] = {"records": row["lag_records"], "seconds": row["lag_seconds"]}
    return out


def _alert_state(settings: Settings) -> str | None:
    """``firing``, ``pending`` or None, from the embedded stack's Prometheus."""
    try:
        resp = requests.get(f"{prometheus.url(settings)}/api/v1/alerts", timeout=5)
        alerts = resp.json()["data"]["alerts"]
    except (requests.RequestException, ValueError, KeyError):
        return None
    states = {a["state"] for a in alerts if a.get("labels", {}).get("alertname") == ALERT}
    return "firing" if "firing" in states else ("pending" if "pending" in states else None)


def run(settings: Settings, cut_s: float = 60.0, users: int = 5, warmup_s: float = 5.0, after_s: float = 5.0,
        seed: int = 0, clock: Callable[[], float] = time.time) -> dict[str, Any]:
    _preflight(settings, cut_s)
    active = active_region(settings)
    workload = Workload(settings, WorkloadConfig(regions=tuple(settings.regions), start_region=active, users=users,
                                                 doc_rate=1.0, search_rate=1.0, seed=seed, run_id=f"linkcut-{seed}"))
    workload.start()
    started = clock()
    try:
        time.sleep(warmup_s)
        cut = _cut_and_watch(settings, cut_s, after_s, clock)
    finally:
        _pause_all(settings, False)
        result = workload.stop()
    replicated = wait_replicated(settings, list(settings.regions), 120.0)
    caught_up_at = clock()
    after = _after(settings, result)
    worst = max((v["seconds"] for s in cut.samples for v in s["lag"].values()), default=0.0)
    checks = {
        "lag_grew": worst >= min(cut_s, 10.0) * 0.5,
        "alert_fired": cut.times["alert_firing_at"] is not None,
        "caught_up": replicated,
        "sessions_equal_to_the_fold": all(not v["differing"] and not v["absent"] for v in after.sessions.values()),
        "regions_equal": after.equal_regions,
        "acknowledged_turns_lost": len(after.missing),
        "regions_equal_to_the_source": not after.final["drift_found"],
    }
    ok = (checks["lag_grew"] and checks["caught_up"] and checks["sessions_equal_to_the_fold"]
          and checks["regions_equal"] and checks["acknowledged_turns_lost"] == 0 and checks["regions_equal_to_the_source"])
    code = code_revision()
    times, cut_at, healed_at = cut.times, cut.cut_at, cut.healed_at
    return {
        "commit": code["commit"], "code": code,
        "drill": {"kind": "cut-link", "cut_s": cut_s, "users": users, "active_region": active,
                  "ack_mode": settings.dialog_ack_mode, "alert": ALERT},
        "machine": machine(),
        "timeline": {"started_at": started, "cut_at": cut_at, "healed_at": healed_at, "caught_up_at": caught_up_at,
                     **times},
        "results": {
            "max_lag_seconds": worst,
            "max_lag_records": max((v["records"] for s in cut.samples for v in s["lag"].values()), default=0),
            "alert_after_cut_s": None if times["alert_firing_at"] is None else times["alert_firing_at"] - cut_at,
            # From the link's return to the first sample with nothing left to copy in any direction.
            "catch_up_s": None if healed_at is None or times["lag_zero_at"] is None else times["lag_zero_at"] - healed_at,
            "turns_acknowledged": len(result.acks),
            "turns_acknowledged_during_cut": sum(1 for a in result.acks if cut_at <= a.acked_at <= (healed_at or 0)),
            "missing_turns": list(after.missing),
            "sessions": after.sessions,
        },
        "checks": checks,
        "reconcile": after.final,
        "samples": cut.samples,
        "verdict": {"ok": ok, "alert_fired": checks["alert_fired"]},
    }


def _preflight(settings: Settings, cut_s: float) -> None:
    if not 5.0 <= cut_s <= 3600.0:
        raise BadInput(f"--cut-for must be between 5 and 3600 seconds, got {cut_s:g}")
    if len(settings.regions) < 2:
        raise BadInput("one region: there is no link to cut")
    if not prometheus.is_up(settings):
        raise BadInput(f"Prometheus does not answer at {prometheus.url(settings)} (`regionsync stack up` starts it)")


@dataclass
class _Cut:
    cut_at: float
    healed_at: float | None
    samples: list[dict[str, Any]]
    times: dict[str, float | None]


def _cut_and_watch(settings: Settings, cut_s: float, after_s: float, clock: Callable[[], float]) -> _Cut:
    """Pause every replicator for ``cut_s``, then resume them; sample the lag and the alert every
    second until ``after_s`` past the return and the alert (if it fired) resolved (120 s at most)."""
    samples: list[dict[str, Any]] = []
    times: dict[str, float | None] = {"alert_pending_at": None, "alert_firing_at": None, "alert_resolved_at": None,
                                      "lag_zero_at": None}
    cut_at = clock()
    log.info("drill: cutting the link (every replicator paused) for %.0f s", cut_s)
    _pause_all(settings, True)
    healed_at = None
    while True:
        now = clock()
        state = _alert_state(settings)
        samples.append({"at": now, "lag": _lag(settings), "alert": state})
        if state == "pending" and times["alert_pending_at"] is None:
            times["alert_pending_at"] = now
        if state == "firing" and times["alert_firing_at"] is None:
            times["alert_firing_at"] = now
        if healed_at is None and now - cut_at >= cut_s:
            _pause_all(settings, False)
            healed_at = now
            log.info("drill: link back")
        if healed_at is not None and times["lag_zero_at"] is None and all(
                v["records"] == 0 and v["seconds"] < 2.0 for v in samples[-1]["lag"].values()):
            times["lag_zero_at"] = now
        if healed_at is not None and state is None and times["alert_resolved_at"] is None and \
                times["alert_firing_at"] is not None:
            times["alert_resolved_at"] = now
        if healed_at is not None and now - healed_at >= after_s and (
                times["alert_firing_at"] is None or times["alert_resolved_at"] is not None or now - healed_at > 120):
            return _Cut(cut_at, healed_at, samples, times)
        time.sleep(1.0)


@dataclass
class _After:
    sessions: dict[str, Any]
    equal_regions: bool
    missing: list[Any]
    final: dict[str, Any]


def _after(settings: Settings, result: WorkloadResult) -> _After:
    """Every region's sessions against the fold of its logs and each other's; the turns lost; every
    region against the source."""
    from drills.failover_checks import reconcile_all as _reconcile

    sessions: dict[str, Any] = {}
    stores = {}
    for region in settings.regions:
        ref = dialoglog.fold_region(settings, region)
        held = dialoglog.wait_store(settings, region, ref.ends)
        stores[region] = held
        sessions[region] = measure.compare_sessions(held, ref.states).__dict__
    first = settings.regions[0]
    turns = measure.lost_turns(result.acks, stores[first])
    return _After(sessions, all(stores[r] == stores[first] for r in settings.regions), list(turns.missing),
                  _reconcile(settings, list(settings.regions), repair=False))


def summary_lines(report: dict[str, Any]) -> list[str]:
    r, c = report["results"], report["checks"]
    catch_up = "-" if r["catch_up_s"] is None else f"{r['catch_up_s']:.1f} s"
    alert = ("did not fire" if r["alert_after_cut_s"] is None
             else f"fired {r['alert_after_cut_s']:.0f} s after the cut")
    return [
        f"drill: link cut for {report['drill']['cut_s']:g} s (every replicator paused), "
        f"{report['drill']['ack_mode']} acknowledgements",
        f"  replication lag grew to {r['max_lag_seconds']:.0f} s / {r['max_lag_records']} records; alert "
        f"{report['drill']['alert']} {alert}",
        f"  {r['turns_acknowledged_during_cut']} turns acknowledged during the cut; caught up {catch_up} after the "
        "link came back",
        f"  sessions equal to the fold: {c['sessions_equal_to_the_fold']}; regions equal: {c['regions_equal']}; "
        f"acknowledged turns lost: {c['acknowledged_turns_lost']}; regions equal to the source: "
        f"{c['regions_equal_to_the_source']}",
        "PASSED" if report["verdict"]["ok"] else "FAILED",
    ]


def check_running(settings: Settings) -> None:
    """The drill needs every replicator running (it pauses them)."""
    from drills import inject
    from stack import stack

    missing = [stack.mirror_name(s, t) for s, t in settings.mirror_pairs()
               if inject.main_pid(settings, stack.mirror_name(s, t)) is None]
    if missing:
        raise BadInput(f"replicators not running: {', '.join(missing)} (`regionsync stack up`)")


__all__ = ["DrillsError", "check_running", "run", "summary_lines"]
