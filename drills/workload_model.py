"""The workload's records and pure decisions (drills/workload.py runs the threads around them).

Records are frozen: what each region acknowledged, each attempt and outage, each search, each
document change with the WAL positions around it. Decisions are pure: which region a client talks
to next (:class:`Route`), what a customer says at each turn, which edit comes next.
"""

from __future__ import annotations

import random
import uuid
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

Clock = Callable[[], float]


# ---------------------------------------------------------------------------- records (frozen)


@dataclass(frozen=True)
class DocChange:
    """One committed change of the CMS table. ``version`` of the change (its WAL position, what
    a region stores) is in ``[lsn_lo, lsn_hi)``; any later change of the same row is past
    ``lsn_hi`` (the row lock orders them), so a region holding ``version >= lsn_lo`` holds this
    change or a newer one."""

    doc_id: str
    op: str  # "insert" | "update" | "delete"
    lsn_lo: int
    lsn_hi: int
    committed_at: float
    marker: str  # unique text in the body ("" for a delete)

    @property
    def deleted(self) -> bool:
        return self.op == "delete"


@dataclass(frozen=True)
class TurnAck:
    """A turn a region acknowledged (HTTP 200): its events are on the dialog log."""

    customer: int
    session_id: str
    turn: int  # the customer's turn number (0-based, over all its sessions)
    text: str
    region: str
    sent_at: float  # the first attempt of this turn
    acked_at: float
    last_seq: int
    events: int
    attempts: int


@dataclass(frozen=True)
class Attempt:
    """A turn attempt that was not acknowledged."""

    customer: int
    session_id: str
    turn: int
    region: str
    at: float
    outcome: str  # "refused" (connection), "timeout", "http_409", "http_503", "http_5xx", "http_4xx"
    detail: str = ""


@dataclass(frozen=True)
class Outage:
    """A customer's wait for an answer: first unanswered attempt of a turn -> its acknowledgement
    (``end`` None: still waiting when the workload stopped)."""

    customer: int
    start: float
    end: float | None
    from_region: str
    to_region: str | None
    attempts: int

    @property
    def seconds(self) -> float | None:
        return None if self.end is None else self.end - self.start


@dataclass(frozen=True)
class SearchSample:
    at: float
    region: str
    ok: bool
    latency_s: float
    outcome: str  # "ok", "refused", "timeout", "http_NNN"
    cited: int = 0  # hits that name their source (the change event they came from)


@dataclass(frozen=True)
class WorkloadConfig:
    regions: tuple[str, ...]
    start_region: str
    users: int = 10
    think_s: float = 1.0  # mean pause between a customer's turns (uniform 0.5x..1.5x)
    turns_per_session: int = 6  # a customer starts a new conversation after this many turns
    request_timeout_s: float = 3.0
    connect_timeout_s: float = 1.0
    retry_pause_s: float = 0.2
    # A region that failed a customer is not followed on a 409 hint for a while: avoid_min_s after
    # its first failure, doubling with each failure in a row up to avoid_max_s (a slow first answer
    # does not keep a customer away for long; a dead region is not hammered).
    avoid_min_s: float = 5.0
    avoid_max_s: float = 60.0
    max_busy: int = 5  # consecutive 503s tolerated from one region before moving on
    doc_rate: float = 1.0  # committed document changes per second (0: none)
    doc_pool: int = 20  # documents the editor keeps alive
    search_rate: float = 2.0  # searches per second (0: none)
    seed: int = 0
    run_id: str = field(default_factory=lambda: uuid.uuid4().hex[:8])


@dataclass(frozen=True)
class WorkloadResult:
    config: WorkloadConfig
    started_at: float
    stopped_at: float
    doc_changes: tuple[DocChange, ...]
    acks: tuple[TurnAck, ...]
    attempts: tuple[Attempt, ...]
    outages: tuple[Outage, ...]
    searches: tuple[SearchSample, ...]
    errors: tuple[str, ...]  # unexpected failures of a workload thread (not of a region)

    def sessions(self) -> list[str]:
        return sorted({a.session_id for a in self.acks})

    def to_dict(self) -> dict[str, Any]:
        return {
            "config": asdict(self.config),
            "started_at": self.started_at,
            "stopped_at": self.stopped_at,
            "doc_changes": [asdict(c) for c in self.doc_changes],
            "acks": [asdict(a) for a in self.acks],
            "attempts": [asdict(a) for a in self.attempts],
            "outages": [asdict(o) for o in self.outages],
            "searches": [asdict(s) for s in self.searches],
            "errors": list(self.errors),
        }


# ---------------------------------------------------------------------------- pure decisions


class Route:
    """Which region a client talks to next. Pure: the caller passes the time of each outcome."""

    def __init__(
        self, regions: Sequence[str], start: str, avoid_min_s: float, avoid_max_s: float, retry_pause_s: float,
        max_busy: int,
    ) -> None:
        self.regions = tuple(regions)
        self.current = start
        self._avoid_min_s = avoid_min_s
        self._avoid_max_s = avoid_max_s
        self._pause = retry_pause_s
        self._max_busy = max_busy
        self._failed_at: dict[str, float] = {}
        self._streak: dict[str, int] = {}  # failures in a row per region
        self._busy = 0

    def avoid_s(self, region: str) -> float:
        streak = self._streak.get(region, 0)
        return 0.0 if streak == 0 else min(self._avoid_max_s, self._avoid_min_s * 2 ** (streak - 1))

    def recently_failed(self, region: str, now: float) -> bool:
        at = self._failed_at.get(region)
        return at is not None and now - at < self.avoid_s(region)

    def ok(self, region: str) -> None:
        self._failed_at.pop(region, None)
        self._streak.pop(region, None)
        self._busy = 0

    def failed(self, region: str, now: float) -> float:
        """No answer, a timeout or a 5xx: move to the next region. Returns the pause before the next try."""
        self._failed_at[region] = now
        self._streak[region] = self._streak.get(region, 0) + 1
        self._busy = 0
        i = self.regions.index(region) if region in self.regions else -1
        others = [self.regions[(i + k) % len(self.regions)] for k in range(1, len(self.regions) + 1)]
        healthy = [r for r in others if r != region and not self.recently_failed(r, now)]
        self.current = healthy[0] if healthy else others[0]
        return self._pause

    def busy(self, region: str, now: float) -> float:
        """A 503 (retry later): stay a few times, then treat the region as failed."""
        self._busy += 1
        if self._busy > self._max_busy:
            return self.failed(region, now)
        return self._pause

    def refused(self, region: str, active: str | None, now: float) -> float:
        """A 409 naming the active region: go there at once, unless it failed us recently (then
        wait here: this region answers once it is promoted)."""
        self._busy = 0
        if active and active != region and active in self.regions and not self.recently_failed(active, now):
            self.current = active
            return 0.0
        return self._pause


def turn_message(customer: int, turn: int, run_id: str) -> dict[str, Any]:
    """The customer's message for its ``turn``-th turn: a knowledge question or an order
    inquiry, with a tag that makes its text unique (so the turn can be found in a region)."""
    tag = f"[{run_id} c{customer} t{turn}]"
    step = turn % 3
    if step == 0:
        questions = ("How do I read a JSON file?", "How can I sort a list of records?",
                     "What does a context manager do?", "How do I parse command line arguments?")
        return {"text": f"{questions[(customer + turn) % len(questions)]} {tag}", "intent": "knowledge"}
    if step == 1:
        return {"text": f"Where is my order? {tag}", "intent": "inquire_order"}
    order = ("A-1001", "A-1002", "A-1003")[(customer + turn) % 3]
    return {"text": f"It is {order} {tag}", "slots": {"order_id": order}}


def session_id(run_id: str, customer: int, turn: int, turns_per_session: int) -> str:
    return f"drill-{run_id}-c{customer}-s{turn // max(1, turns_per_session)}"


def next_doc_op(rng: random.Random, live: Sequence[str], pool: int) -> str:
    """Insert until the pool is full; then mostly body updates, some deletes and inserts."""
    if len(live) < max(1, pool // 2):
        return "insert"
    roll = rng.random()
    if roll < 0.7:
        return "update"
    if roll < 0.85 or len(live) >= pool:
        return "delete"
    return "insert"


FILLER = (
    "Regions keep their own index of the knowledge base, fed by the same change stream. ",
    "A standby region folds the dialog log so it can take over the conversations. ",
    "The operator practises a disaster by failing a region and watching the standby. ",
)


def doc_body(run_id: str, doc: int, rev: int) -> tuple[str, str]:
    marker = f"drill-{run_id}-d{doc}-r{rev}"
    return marker, f"Drill document {doc}, revision {rev} ({marker}). " + "".join(FILLER) * 3


def doc_id_of(run_id: str, doc: int) -> str:
    return f"drill-{run_id}-d{doc}"
