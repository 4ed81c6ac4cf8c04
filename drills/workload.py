"""A live workload against a running embedded stack, in background threads, with a record of
everything that was acknowledged.

Three kinds of work run side by side until :meth:`Workload.stop`:

* **document edits** in the CMS table (inserts, body updates, deletes) at ``doc_rate`` commits
  per second; each commit is recorded with the WAL positions around its change (the change's
  LSN, which is the version a region holds, lies in ``[lsn_lo, lsn_hi)``), so a region can be
  checked for every committed version afterwards;
* **customers** (``users`` threads) holding conversations through a region's HTTP API
  (``POST /sessions/{id}/turns``): each turn is recorded when a region acknowledged it (HTTP 200:
  its events are on the log). A customer whose region fails (no answer, timeout, 5xx) moves to
  another region; one that answers 409 names the active region, which the customer follows unless
  that region failed it recently (then it waits and asks again: the standby answers once it is
  promoted). The time from a customer's first unanswered attempt of a turn to that turn's
  acknowledgement is recorded as one of its outages;
* **searches** (``GET /search``) at ``search_rate`` per second, to the searcher's region, moving
  to another region when one fails; each is recorded with its latency and outcome.

The routing decisions are pure (:class:`Route`, :func:`next_doc_op`, :func:`turn_message`); the
threads are thin adapters around them. :meth:`Workload.stop` returns a frozen
:class:`WorkloadResult`.
"""

from __future__ import annotations

import logging
import random
import threading
import time
import uuid
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

import psycopg
import requests

from regionsync.settings import Settings

log = logging.getLogger(__name__)

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


# ---------------------------------------------------------------------------- the threads


def _outcome(exc: requests.RequestException) -> str:
    return "timeout" if isinstance(exc, requests.Timeout) and not isinstance(exc, requests.ConnectTimeout) else "refused"


class Workload:
    """Start with :meth:`start`; :meth:`stop` ends every thread and returns the record."""

    def __init__(
        self,
        settings: Settings,
        config: WorkloadConfig,
        urls: Mapping[str, str] | None = None,
        clock: Clock = time.time,
    ) -> None:
        self.settings = settings
        self.config = config
        self.urls = dict(urls) if urls is not None else {r: settings.serve_url(r) for r in config.regions}
        self._clock = clock
        self._stop = threading.Event()
        self._lock = threading.Lock()
        self._threads: list[threading.Thread] = []
        self._doc_changes: list[DocChange] = []
        self._acks: list[TurnAck] = []
        self._attempts: list[Attempt] = []
        self._outages: list[Outage] = []
        self._searches: list[SearchSample] = []
        self._errors: list[str] = []
        self._started_at = 0.0

    # -------------------------------------------------------------- lifecycle
    def start(self) -> None:
        self._started_at = self._clock()
        targets: list[tuple[str, Callable[[], None]]] = []
        if self.config.doc_rate > 0:
            targets.append(("drill-docs", self._edit_documents))
        if self.config.search_rate > 0:
            targets.append(("drill-search", self._search))
        for i in range(self.config.users):
            targets.append((f"drill-customer-{i}", lambda i=i: self._customer(i)))  # type: ignore[misc]
        for name, target in targets:
            t = threading.Thread(target=self._guard(name, target), name=name, daemon=True)
            self._threads.append(t)
            t.start()

    def stop(self) -> WorkloadResult:
        self._stop.set()
        deadline = time.monotonic() + self.config.request_timeout_s + self.config.connect_timeout_s + 10
        for t in self._threads:
            t.join(max(0.1, deadline - time.monotonic()))
            if t.is_alive():
                self._record_error(f"{t.name} did not stop")
        return self.snapshot()

    def snapshot(self) -> WorkloadResult:
        """What was recorded so far (the threads may still be running)."""
        with self._lock:
            return WorkloadResult(
                self.config, self._started_at, self._clock(), tuple(self._doc_changes), tuple(self._acks),
                tuple(self._attempts), tuple(self._outages), tuple(self._searches), tuple(self._errors),
            )

    def acked(self) -> int:
        with self._lock:
            return len(self._acks)

    def _guard(self, name: str, target: Callable[[], None]) -> Callable[[], None]:
        def run() -> None:
            try:
                target()
            except Exception as exc:  # noqa: BLE001 - the record says what stopped the thread
                log.exception("workload thread %s failed", name)
                self._record_error(f"{name}: {type(exc).__name__}: {exc}")

        return run

    def _record_error(self, text: str) -> None:
        with self._lock:
            self._errors.append(text)

    def _route(self) -> Route:
        c = self.config
        return Route(c.regions, c.start_region, c.avoid_min_s, c.avoid_max_s, c.retry_pause_s, c.max_busy)

    # -------------------------------------------------------------- customers
    def _customer(self, i: int) -> None:
        c = self.config
        rng = random.Random(c.seed * 1_000_003 + i)
        route = self._route()
        http = requests.Session()
        timeout = (c.connect_timeout_s, c.request_timeout_s)
        turn = 0
        # Customers do not all start at once.
        if self._stop.wait(rng.uniform(0, c.think_s)):
            return
        while not self._stop.is_set():
            sid = session_id(c.run_id, i, turn, c.turns_per_session)
            message = turn_message(i, turn, c.run_id)
            first_sent = self._clock()
            outage_start: float | None = None
            outage_from = ""
            tries = 0
            while not self._stop.is_set():
                region = route.current
                tries += 1
                sent = self._clock()
                pause = 0.0
                try:
                    resp = http.post(f"{self.urls[region]}/sessions/{sid}/turns", json=message, timeout=timeout)
                except requests.RequestException as exc:
                    now = self._clock()
                    self._attempt(i, sid, turn, region, sent, _outcome(exc), type(exc).__name__)
                    pause = route.failed(region, now)
                else:
                    now = self._clock()
                    if resp.status_code == 200:
                        body = resp.json()
                        route.ok(region)
                        with self._lock:
                            self._acks.append(TurnAck(
                                i, sid, turn, message["text"], region, first_sent, now, int(body["last_seq"]),
                                int(body["events"]), tries,
                            ))
                            if outage_start is not None:
                                self._outages.append(Outage(i, outage_start, now, outage_from, region, tries))
                        outage_start = None
                        break
                    detail = resp.text[:200]
                    if resp.status_code == 409:
                        active = _json_field(resp, "active_region")
                        self._attempt(i, sid, turn, region, sent, "http_409", str(active))
                        pause = route.refused(region, active, now)
                    elif resp.status_code == 503:
                        self._attempt(i, sid, turn, region, sent, "http_503", detail)
                        pause = route.busy(region, now)
                    elif resp.status_code >= 500:
                        self._attempt(i, sid, turn, region, sent, "http_5xx", f"{resp.status_code} {detail}")
                        pause = route.failed(region, now)
                    else:  # a 4xx other than 409 is a bug of the workload or the service: say so, go on
                        self._attempt(i, sid, turn, region, sent, "http_4xx", f"{resp.status_code} {detail}")
                        self._record_error(f"customer {i}: HTTP {resp.status_code} from {region}: {detail}")
                        pause = route.failed(region, now)
                if outage_start is None:
                    outage_start, outage_from = sent, region
                if pause and self._stop.wait(pause):
                    break
            if outage_start is not None:  # stopped while waiting for an answer
                with self._lock:
                    self._outages.append(Outage(i, outage_start, None, outage_from, None, tries))
            turn += 1
            self._stop.wait(c.think_s * rng.uniform(0.5, 1.5))

    def _attempt(self, customer: int, sid: str, turn: int, region: str, at: float, outcome: str, detail: str) -> None:
        with self._lock:
            self._attempts.append(Attempt(customer, sid, turn, region, at, outcome, detail))

    # -------------------------------------------------------------- searches
    def _search(self) -> None:
        c = self.config
        route = self._route()
        http = requests.Session()
        queries = ("read a JSON file", "sort a list", "standby region takes over", "context manager", "parse arguments")
        period = 1.0 / c.search_rate
        n = 0
        next_at = time.monotonic()
        while not self._stop.is_set():
            region = route.current
            started = self._clock()
            t0 = time.perf_counter()
            cited = 0
            try:
                resp = http.get(f"{self.urls[region]}/search", params={"q": queries[n % len(queries)], "k": "5"},
                                timeout=(c.connect_timeout_s, c.request_timeout_s))
                ok = resp.status_code == 200
                outcome = "ok" if ok else f"http_{resp.status_code}"
                if ok:
                    cited = sum(1 for h in resp.json().get("hits", []) if h.get("source"))
            except (requests.RequestException, ValueError) as exc:
                ok, outcome = False, _outcome(exc) if isinstance(exc, requests.RequestException) else "bad_json"
            latency = time.perf_counter() - t0
            with self._lock:
                self._searches.append(SearchSample(started, region, ok, latency, outcome, cited))
            if ok:
                route.ok(region)
            else:
                route.failed(region, self._clock())
            n += 1
            next_at = max(next_at + period, time.monotonic())  # no burst to catch up after a stall
            self._stop.wait(max(0.0, next_at - time.monotonic()))

    # -------------------------------------------------------------- documents
    def _edit_documents(self) -> None:
        c = self.config
        rng = random.Random(c.seed * 7919 + 17)
        live: list[int] = []
        revision: dict[int, int] = {}
        next_doc = 0
        period = 1.0 / c.doc_rate
        next_at = time.monotonic()
        conn = self._connect()
        try:
            while conn is not None and not self._stop.is_set():
                op = next_doc_op(rng, [doc_id_of(c.run_id, d) for d in live], c.doc_pool)
                if op == "insert":
                    doc, next_doc = next_doc, next_doc + 1
                elif not live:
                    op, doc, next_doc = "insert", next_doc, next_doc + 1
                else:
                    doc = rng.choice(live)
                rev = revision.get(doc, -1) + 1
                try:
                    change = self._write(conn, op, doc, rev)
                except psycopg.OperationalError as exc:
                    # The database went away (a restart, a fault drill): the change's outcome is
                    # unknown, so it is not recorded as committed; connect again and go on.
                    log.warning("document edit failed (%s); reconnecting", exc)
                    conn.close()
                    conn = self._connect()
                    continue
                with self._lock:
                    self._doc_changes.append(change)
                revision[doc] = rev
                if op == "insert":
                    live.append(doc)
                elif op == "delete":
                    live.remove(doc)
                next_at = max(next_at + period, time.monotonic())
                self._stop.wait(max(0.0, next_at - time.monotonic()))
        finally:
            if conn is not None:
                conn.close()

    def _connect(self) -> psycopg.Connection | None:
        """A connection to the CMS database, retried until it answers; None if stopped first."""
        while not self._stop.is_set():
            try:
                return psycopg.connect(self.settings.pg_dsn(), connect_timeout=5)
            except psycopg.OperationalError:
                self._stop.wait(0.5)
        return None

    def _write(self, conn: psycopg.Connection, op: str, doc: int, rev: int) -> DocChange:
        doc_id = doc_id_of(self.config.run_id, doc)
        lsn = "SELECT (pg_current_wal_insert_lsn() - '0/0'::pg_lsn)::bigint"
        marker = ""
        with conn.transaction():
            lo = int(conn.execute(lsn).fetchone()[0])  # type: ignore[index]
            if op == "delete":
                conn.execute("DELETE FROM documents WHERE id = %s", (doc_id,))
            else:
                marker, body = doc_body(self.config.run_id, doc, rev)
                conn.execute(
                    "INSERT INTO documents (id, title, body, tags) VALUES (%s, %s, %s, %s) "
                    "ON CONFLICT (id) DO UPDATE SET title = EXCLUDED.title, body = EXCLUDED.body, updated_at = now()",
                    (doc_id, f"Drill document {doc}", body, ["drill"]),
                )
            hi = int(conn.execute(lsn).fetchone()[0])  # type: ignore[index]
        return DocChange(doc_id, op, lo, hi, self._clock(), marker)


def _json_field(resp: requests.Response, name: str) -> str | None:
    try:
        value = resp.json().get(name)
    except ValueError:
        return None
    return str(value) if value else None
