"""The GSLB's prober: every region's ``/readyz`` every interval, in background threads.

Per region, a scheduler thread sends a probe at each tick of a fixed schedule (``interval_s``
apart) in a small thread pool, so a probe still waiting for a hung region never delays the next
one (a GSLB probes on its schedule; an earlier version that probed in line skipped every other
tick of a frozen region); each gives up after ``timeout_s``. A second thread feeds the results to
the region's :class:`drills.gslb.HealthState` in the order the probes were sent; a transition
(region declared down, or up again) is recorded and handed to ``on_transition`` in that thread
(keep it short: set an event).
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from collections.abc import Callable, Mapping
from concurrent.futures import Future, ThreadPoolExecutor

import requests

from drills.gslb import HealthState, ProbeResult, Transition
from serve.tls import VerifyingSession

log = logging.getLogger(__name__)


class Prober:
    def __init__(
        self,
        urls: Mapping[str, str],
        interval_s: float,
        timeout_s: float,
        misses: int,
        on_transition: Callable[[Transition], None] = lambda _t: None,
        clock: Callable[[], float] = time.time,
        verify: str | bool = True,
    ) -> None:
        self.urls = dict(urls)
        self.verify = verify  # the services' CA when they serve HTTPS
        self.interval_s = interval_s
        self.timeout_s = min(timeout_s, interval_s)
        self.misses = misses
        self._on_transition = on_transition
        self._clock = clock
        self._stop = threading.Event()
        self._lock = threading.Lock()
        self._results: list[ProbeResult] = []
        self._transitions: list[Transition] = []
        self._threads: list[threading.Thread] = []

    def start(self) -> None:
        for region in self.urls:
            pending: queue.Queue[Future[ProbeResult] | None] = queue.Queue()
            for name, target in ((f"probe-{region}", self._schedule), (f"probe-{region}-results", self._consume)):
                t = threading.Thread(target=target, args=(region, pending), name=name, daemon=True)
                self._threads.append(t)
                t.start()

    def stop(self) -> tuple[list[ProbeResult], list[Transition]]:
        self._stop.set()
        for t in self._threads:
            t.join(self.timeout_s + 5)
        return self.results()

    def results(self) -> tuple[list[ProbeResult], list[Transition]]:
        with self._lock:
            return list(self._results), list(self._transitions)

    def _schedule(self, region: str, pending: queue.Queue[Future[ProbeResult] | None]) -> None:
        url = f"{self.urls[region]}/readyz"
        local = threading.local()

        def one() -> ProbeResult:
            if not hasattr(local, "http"):  # a session per pool thread: requests.Session is not thread-safe
                local.http = VerifyingSession(self.verify)
            return probe(local.http, region, url, self.timeout_s, self._clock)

        # Two probes can be in flight (timeout <= interval); a third thread is slack for a stall.
        with ThreadPoolExecutor(max_workers=3, thread_name_prefix=f"probe-{region}") as pool:
            next_tick = time.monotonic()
            while not self._stop.is_set():
                pending.put(pool.submit(one))
                next_tick += self.interval_s
                now = time.monotonic()
                if next_tick < now:  # the machine stalled past a tick: keep the schedule's phase
                    next_tick += ((now - next_tick) // self.interval_s + 1) * self.interval_s
                self._stop.wait(next_tick - now)
            pending.put(None)

    def _consume(self, region: str, pending: queue.Queue[Future[ProbeResult] | None]) -> None:
        state = HealthState(region, self.misses)
        while (future := pending.get()) is not None:
            result = future.result()
            transition = state.observe(result)
            with self._lock:
                self._results.append(result)
                if transition is not None:
                    self._transitions.append(transition)
            if transition is not None:
                log.info("GSLB: region %s is %s (%d misses in a row)", region, transition.health.value, transition.misses)
                self._on_transition(transition)


def probe(http: requests.Session, region: str, url: str, timeout_s: float, clock: Callable[[], float]) -> ProbeResult:
    at = clock()
    try:
        resp = http.get(url, timeout=(min(1.0, timeout_s), timeout_s))
    except requests.Timeout as exc:
        outcome = "refused" if isinstance(exc, requests.ConnectTimeout) else "timeout"
        return ProbeResult(region, at, clock(), False, None, outcome)
    except requests.RequestException:
        return ProbeResult(region, at, clock(), False, None, "refused")
    role = None
    try:
        role = resp.json().get("role")
    except ValueError:
        pass
    ok = resp.status_code == 200
    return ProbeResult(region, at, clock(), ok, resp.status_code, "ready" if ok else "not_ready", role)
