"""What a failover drill measured, computed from recorded timelines. Pure: no clock, no I/O.

Inputs are what the drill recorded (the workload's acknowledged turns, attempts, outages,
searches and committed document changes; the prober's results; the failure and promotion
times) and what it read from the surviving region afterwards (its sessions, the sessions folded
from the whole log, its documents' versions). Times are epoch seconds.

* detection: failure injected -> the GSLB declared the region down;
* RTO: the last turn the failed region acknowledged -> the first turn the new region
  acknowledged after it (both are answers a customer saw);
* per customer: its outages (first unanswered attempt of a turn -> that turn acknowledged) and
  when it got its first answer from the new region; the share of customers answered by the new
  region within ``moved_within_s`` of the failure (the seed promises 98% within a minute);
* RPO: acknowledged turns missing in the new region (must be 0), and documents whose newest
  committed change the new region does not hold;
* sessions: every session the new region holds equals the fold of the whole log;
* searches: error rate and latency percentiles, over the drill and during the outage window.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass
from typing import Any

from dialog.state import SessionState
from drills.workload_model import DocChange, Outage, SearchSample, TurnAck
from indexer.plan import DocState


def percentile(values: Sequence[float], q: float) -> float | None:
    """Nearest-rank percentile (q in 0..100); None for no values."""
    if not values:
        return None
    ordered = sorted(values)
    rank = max(1, math.ceil(q / 100.0 * len(ordered)))
    return ordered[min(rank, len(ordered)) - 1]


@dataclass(frozen=True)
class Recovery:
    failed_region: str
    new_region: str
    fail_at: float
    detected_at: float | None
    promote_started_at: float | None
    promoted_at: float | None
    last_good_failed: float | None  # last turn acknowledged by the failed region
    first_good_new: float | None  # first turn acknowledged by the new region after that
    detection_s: float | None
    promotion_s: float | None
    rto_s: float | None
    failure_to_first_answer_s: float | None


def recovery(
    acks: Sequence[TurnAck],
    failed_region: str,
    new_region: str,
    fail_at: float,
    detected_at: float | None,
    promote_started_at: float | None,
    promoted_at: float | None,
) -> Recovery:
    from_failed = [a.acked_at for a in acks if a.region == failed_region]
    last_good = max(from_failed) if from_failed else None
    after = last_good if last_good is not None else fail_at
    from_new = [a.acked_at for a in acks if a.region == new_region and a.acked_at >= after]
    first_new = min(from_new) if from_new else None
    return Recovery(
        failed_region, new_region, fail_at, detected_at, promote_started_at, promoted_at, last_good, first_new,
        detection_s=_diff(detected_at, fail_at),
        promotion_s=_diff(promoted_at, promote_started_at),
        rto_s=_diff(first_new, last_good),
        failure_to_first_answer_s=_diff(first_new, fail_at),
    )


def _diff(a: float | None, b: float | None) -> float | None:
    return None if a is None or b is None else a - b


@dataclass(frozen=True)
class CustomerOutcome:
    customer: int
    outage_s: float  # total time waiting for answers since the failure (open outages to ``end``)
    moved_after_s: float | None  # failure -> first answer from the new region
    intervals: tuple[tuple[float, float | None], ...]  # (start, end) of each outage, epoch seconds


@dataclass(frozen=True)
class Customers:
    customers: tuple[CustomerOutcome, ...]
    moved_within_s: float
    moved_share: float  # customers answered by the new region within moved_within_s / all customers
    outage_p50_s: float | None
    outage_max_s: float | None


def customers(
    n_customers: int,
    acks: Sequence[TurnAck],
    outages: Sequence[Outage],
    new_region: str,
    fail_at: float,
    end: float,
    moved_within_s: float = 60.0,
) -> Customers:
    out: list[CustomerOutcome] = []
    for c in range(n_customers):
        mine = [o for o in outages if o.customer == c and (o.end is None or o.end >= fail_at)]
        total = sum(((o.end if o.end is not None else end) - max(o.start, fail_at)) for o in mine)
        firsts = [a.acked_at for a in acks if a.customer == c and a.region == new_region and a.acked_at >= fail_at]
        moved = min(firsts) - fail_at if firsts else None
        out.append(CustomerOutcome(c, max(0.0, total), moved, tuple((o.start, o.end) for o in mine)))
    moved_ok = sum(1 for c in out if c.moved_after_s is not None and c.moved_after_s <= moved_within_s)
    waits = [c.outage_s for c in out]
    return Customers(
        tuple(out), moved_within_s, moved_ok / n_customers if n_customers else 0.0,
        percentile(waits, 50), max(waits) if waits else None,
    )


@dataclass(frozen=True)
class TurnLoss:
    acknowledged: int
    missing: tuple[dict[str, Any], ...]  # acknowledged turns the region does not hold


def turn_held(state: SessionState | None, ack: TurnAck) -> bool:
    """Does a region holding ``state`` hold all of the acknowledged turn ``ack``? Its user message
    (same text) is within the turn's sequence numbers, the session reached the turn's last one, and
    no other user message took one of them. The last condition catches a turn only partly
    replicated before its region was lost (its message crossed, its reply did not): the new
    region's session went on, and its next turn took the sequence numbers the reply had."""
    if state is None or state.last_seq < ack.last_seq:
        return False
    first_seq = ack.last_seq - ack.events + 1
    users = [t for t in state.turns if t.role == "user" and first_seq <= t.seq <= ack.last_seq]
    return len(users) == 1 and users[0].text == ack.text


def lost_turns(acks: Iterable[TurnAck], sessions: Mapping[str, SessionState]) -> TurnLoss:
    """The acknowledged turns a region does not hold whole (:func:`turn_held`)."""
    acks = list(acks)
    missing: list[dict[str, Any]] = []
    for ack in acks:
        state = sessions.get(ack.session_id)
        if not turn_held(state, ack):
            missing.append({"session_id": ack.session_id, "turn": ack.turn, "region": ack.region,
                            "last_seq": ack.last_seq, "held_last_seq": state.last_seq if state else None})
    return TurnLoss(len(acks), tuple(missing))


def last_changes(changes: Iterable[DocChange]) -> dict[str, DocChange]:
    out: dict[str, DocChange] = {}
    for c in sorted(changes, key=lambda c: c.lsn_lo):
        out[c.doc_id] = c
    return out


def change_held(change: DocChange, state: DocState | None) -> bool:
    """Does a region holding ``state`` for the document hold ``change`` (or a newer one)?"""
    if change.deleted:
        return state is None or state.deleted
    return state is not None and not state.deleted and state.version >= change.lsn_lo


@dataclass(frozen=True)
class DocLoss:
    changes: int  # committed changes during the drill
    documents: int  # documents they touched
    missing: tuple[dict[str, Any], ...]  # documents whose newest committed change the region lacks


def lost_documents(changes: Iterable[DocChange], states: Mapping[str, DocState]) -> DocLoss:
    changes = list(changes)
    newest = last_changes(changes)
    missing = [
        {"doc_id": doc_id, "op": c.op, "lsn_lo": c.lsn_lo, "held_version": s.version if s else None,
         "held_deleted": s.deleted if s else None}
        for doc_id, c in sorted(newest.items())
        if not change_held(c, s := states.get(doc_id))
    ]
    return DocLoss(len(changes), len(newest), tuple(missing))


@dataclass(frozen=True)
class SessionCheck:
    sessions: int  # sessions the region holds
    folded: int  # sessions in the fold of the whole log
    differing: tuple[str, ...]  # held but not equal to the fold
    absent: tuple[str, ...]  # in the log, not in the region


def compare_sessions(held: Mapping[str, SessionState], folded: Mapping[str, SessionState]) -> SessionCheck:
    differing = tuple(sorted(sid for sid, s in held.items() if folded.get(sid) != s))
    absent = tuple(sorted(sid for sid in folded if sid not in held))
    return SessionCheck(len(held), len(folded), differing, absent)


@dataclass(frozen=True)
class SearchStats:
    requests: int
    errors: int
    error_rate: float
    p50_ms: float | None
    p99_ms: float | None


def search_stats(samples: Iterable[SearchSample], start: float | None = None, end: float | None = None) -> SearchStats:
    picked = [s for s in samples if (start is None or s.at >= start) and (end is None or s.at <= end)]
    errors = sum(1 for s in picked if not s.ok)
    ok_ms = [s.latency_s * 1000 for s in picked if s.ok]
    return SearchStats(len(picked), errors, errors / len(picked) if picked else 0.0,
                       percentile(ok_ms, 50), percentile(ok_ms, 99))


def as_dict(obj: Any) -> dict[str, Any]:
    out: dict[str, Any] = asdict(obj)
    return out
