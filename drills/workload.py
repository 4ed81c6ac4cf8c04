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

The records and the routing decisions live in :mod:`drills.workload_model` (pure: :class:`Route`,
:func:`next_doc_op`, :func:`turn_message`); the threads here are thin adapters around them. :meth:`Workload.stop` returns a frozen
:class:`WorkloadResult`.
"""

from __future__ import annotations

import logging
import random
import threading
import time
from collections.abc import Callable, Mapping

import psycopg
import requests

from drills.workload_model import (
    Attempt,
    Clock,
    DocChange,
    Outage,
    Route,
    SearchSample,
    TurnAck,
    WorkloadConfig,
    WorkloadResult,
    doc_body,
    doc_id_of,
    next_doc_op,
    session_id,
    turn_message,
)
from regionsync.settings import Settings
from serve.auth import ASSISTANT
from serve.tls import http_session

log = logging.getLogger(__name__)



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
        http = http_session(self.settings, ASSISTANT)
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
        http = http_session(self.settings, ASSISTANT)
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
