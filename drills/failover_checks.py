"""What the drill checks after a failover, in the new region and at failback.

The new region: the turns acknowledged and the document versions committed that it lacks (the
RPO), its sessions against a fold of its logs, what its service shows a customer, the knowledge
version it serves while the source region is down. Failback: the failed region comes back as a
standby, its late turns are set aside in the new region (the conflict report: exactly the
acknowledged turns lost), it catches up, and replication carries everything both ways.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass
from typing import Any

import requests

from dialog.pg_store import PostgresStore
from dialog.state import SessionState
from drills import dialoglog, inject, measure
from drills.errors import DrillsError
from drills.inject import Scope
from drills.workload_model import WorkloadResult
from regionsync.settings import Settings
from serve.auth import ASSISTANT
from serve.tls import http_session, verify

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class RegionChecks:
    turns: measure.TurnLoss
    docs: measure.DocLoss
    docs_complete_after_s: float | None
    sessions: measure.SessionCheck
    views_checked: int
    views_differing: tuple[str, ...]
    log_events: int


def region_docs(settings: Settings, region: str) -> dict[str, Any]:
    from indexer.milvus_reader import MilvusIndexReader

    sink = MilvusIndexReader.for_region(settings, region)
    try:
        return sink.doc_states()
    finally:
        sink.close()


def check_new_region(settings: Settings, region: str, result: WorkloadResult, clock: Callable[[], float],
                      timeout_s: float = 120.0, wait_docs: bool = True) -> RegionChecks:
    # Documents: changes committed just before the workload stopped are still in flight (when
    # the source region is down, what it had not replicated cannot arrive before the failback).
    stopped = result.stopped_at
    deadline = time.monotonic() + (timeout_s if wait_docs else 0.0)
    while True:
        docs = measure.lost_documents(result.doc_changes, region_docs(settings, region))
        if not docs.missing or time.monotonic() > deadline:
            break
        time.sleep(0.5)
    complete_after = None if docs.missing else max(0.0, clock() - stopped)
    ref = dialoglog.fold_region(settings, region)
    held = dialoglog.wait_store(settings, region, ref.ends)
    sessions = measure.compare_sessions(held, ref.states)
    turns = measure.lost_turns(result.acks, held)
    checked, differing = _compare_views(settings, region, result.sessions(), ref.states)
    return RegionChecks(turns, docs, complete_after, sessions, checked, differing, ref.events)


VIEW_FIELDS = ("status", "intent", "slots", "last_seq", "turns", "tool_calls", "confirmed", "handoff_reason", "origin")


def _compare_views(settings: Settings, region: str, sessions: list[str], folded: Mapping[str, SessionState]
                   ) -> tuple[int, tuple[str, ...]]:
    """What the region's service shows a customer (GET /sessions/{id}) against the fold."""
    http = http_session(settings, ASSISTANT)
    differing: list[str] = []
    for sid in sessions:
        resp = http.get(f"{settings.serve_url(region)}/sessions/{sid}", timeout=30)
        expected = folded.get(sid)
        if resp.status_code != 200 or expected is None:
            differing.append(sid)
            continue
        want = expected.to_dict()
        got = resp.json()
        if any(_norm(got.get(k)) != _norm(want.get(k)) for k in VIEW_FIELDS):
            differing.append(sid)
    return len(sessions), tuple(differing)


def _norm(value: Any) -> Any:
    """JSON-shaped (tuples as lists) for comparing a service's view with a state's dict."""
    import orjson

    return orjson.loads(orjson.dumps(value))


def reconcile_all(settings: Settings, regions: list[str], repair: bool) -> dict[str, Any]:
    from drills.reconcile import ReconcileReport, reconcile

    reports: list[ReconcileReport] = [reconcile(settings, r, repair=repair) for r in regions]
    merged = ReconcileReport(regions, reports[0].documents_in_source if reports else 0,
                             [d for rep in reports for d in rep.drifts])
    if repair:
        merged.remaining = [d for rep in reports for d in (rep.remaining or [])]
    merged.seconds = sum(rep.seconds for rep in reports)
    return merged.to_dict()


def failback(settings: Settings, region: str, scope: Scope, new_region: str, result: WorkloadResult,
             clock: Callable[[], float], timeout_s: float = 300.0) -> dict[str, Any]:
    """Start the failed region's processes again and wait until it is a standby that caught up:
    it learned the promotion, its late turns reached the new region (and were set aside there),
    the new region's turns reached it, and its sessions equal the fold of its logs and the new
    region's sessions."""
    from indexer.lag import region_lag

    started = clock()
    log.info("drill: failback: starting region %s again", region)
    inject.restart_region(settings, region, clock, scope=scope)
    deadline = time.monotonic() + timeout_s
    state: dict[str, Any] = {}
    while time.monotonic() < deadline:
        try:
            state = requests.get(f"{settings.serve_url(region)}/readyz", timeout=10, verify=verify(settings)).json()
            if state.get("ready") and region_lag(settings, region) == 0:
                break
        except Exception:  # noqa: BLE001 - not up yet (no answer, no JSON, lag unreadable): ask again
            pass
        time.sleep(0.5)
    ready_at = clock()
    replicated = wait_replicated(settings, [region, new_region], max(10.0, deadline - time.monotonic()))
    sessions = same_as_new = None
    conflicts: list[dict[str, Any]] = []
    try:
        ref = dialoglog.fold_region(settings, region)
        held = dialoglog.wait_store(settings, region, ref.ends, timeout_s=max(10.0, deadline - time.monotonic()))
        sessions = measure.compare_sessions(held, ref.states)
        new_ref = dialoglog.fold_region(settings, new_region)
        new_held = dialoglog.wait_store(settings, new_region, new_ref.ends,
                                        timeout_s=max(10.0, deadline - time.monotonic()))
        same_as_new = measure.compare_sessions(held, new_held)
        conflicts = [e.to_dict() for e in _fenced(settings, new_region)]
    except DrillsError as exc:
        log.error("drill: failback: %s", exc)
    caught_up = (bool(state.get("ready")) and state.get("role") == "standby" and replicated
                 and sessions is not None and not sessions.differing and not sessions.absent
                 and same_as_new is not None and not same_as_new.differing and not same_as_new.absent)
    return {
        "region": region, "started_at": started, "ready_at": ready_at, "seconds": ready_at - started,
        "role": state.get("role"), "ready": bool(state.get("ready")), "replicated": replicated,
        "caught_up": caught_up,
        "sessions": None if sessions is None else asdict(sessions),
        "same_as_new_region": None if same_as_new is None else asdict(same_as_new),
        "conflicts": conflicts,
        "unreplicated_turns": unreplicated_turns(result, region, conflicts),
    }


def _fenced(settings: Settings, region: str) -> list[Any]:
    store = PostgresStore.for_region(settings, region)
    try:
        return store.fenced()
    finally:
        store.close()


def unreplicated_turns(result: WorkloadResult, failed: str, conflicts: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The acknowledged turns of the failed region that the promotion set aside: any of their
    events is in the conflict report (written in the failed region, never received by the new
    one before its cut). Pure."""
    fenced = {(str(c["session_id"]), int(c["seq"])) for c in conflicts if c.get("origin") == failed}
    out = []
    for ack in result.acks:
        if ack.region != failed:
            continue
        seqs = range(ack.last_seq - ack.events + 1, ack.last_seq + 1)
        hit = sorted(q for q in seqs if (ack.session_id, q) in fenced)
        if hit:
            out.append({"session_id": ack.session_id, "turn": ack.turn, "region": ack.region,
                        "last_seq": ack.last_seq, "fenced_seqs": hit, "acked_at": ack.acked_at})
    return out


def wait_replicated(settings: Settings, regions: list[str], timeout_s: float) -> bool:
    """Every replicator into ``regions`` holds everything of its source (as its source answers
    it now): lag 0 and the source heard from within the last few seconds."""
    from mirror.status import inbound

    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        try:
            rows = [row for r in regions for row in inbound(settings, r).values()]
            if rows and all(row["lag_records"] == 0 and row["source_seen_s"] is not None
                            and row["source_seen_s"] < 3.0 for row in rows):
                return True
        except Exception:  # noqa: BLE001 - a database still starting: ask again
            pass
        time.sleep(0.5)
    return False


def replication_lag(settings: Settings, source: str, target: str) -> dict[str, Any]:
    """What ``target`` lacks of ``source`` right now, from the replicator's live /metrics (the
    dialog topic: the turns a loss of ``source`` would cost), and its checkpoints' view."""
    from mirror.status import inbound

    out: dict[str, Any] = {"source": source, "target": target}
    try:
        port = settings.metrics_port("mirror", target, source)
        text = requests.get(f"http://{settings.serve_host}:{port}/metrics", timeout=2).text
        records = seconds = 0.0
        for line in text.splitlines():
            if f'source="{source}"' not in line or f'topic="{settings.dialog_topic}"' not in line:
                continue
            if line.startswith("regionsync_mirror_lag_records{"):
                records += float(line.rsplit(" ", 1)[1])
            elif line.startswith("regionsync_mirror_lag_seconds{"):
                seconds = max(seconds, float(line.rsplit(" ", 1)[1]))
        out.update(dialog_lag_records=int(records), dialog_lag_ms=round(seconds * 1000, 1))
    except (requests.RequestException, ValueError, IndexError) as exc:
        out["metrics_error"] = str(exc)
    try:
        out["checkpoints"] = inbound(settings, target).get(source)
    except Exception as exc:  # noqa: BLE001 - reported, not fatal
        out["checkpoints_error"] = str(exc)
    return out


def knowledge_served(settings: Settings, region: str) -> dict[str, Any]:
    """What ``region`` serves while the source region is down: how many documents, the newest
    CMS commit it holds (a WAL position) and when it was written there."""
    states = region_docs(settings, region)
    live = [s for s in states.values() if not s.deleted]
    versions = [int(s.version) for s in live]
    return {"region": region, "documents": len(live), "newest_version": max(versions, default=None),
            "read_at": time.time()}
