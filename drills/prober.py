"""The GSLB's prober: every region's ``/readyz`` every interval, in background threads.

One thread per region sends a probe at each tick of a fixed schedule (``interval_s`` apart,
whatever the previous probe took) and gives up after ``timeout_s`` (at most the interval, so a
hung region cannot delay the next tick). Each result goes through the region's
:class:`drills.gslb.HealthState`; a transition (region declared down, or up again) is recorded
and handed to ``on_transition`` in the prober's thread (keep it short: set an event).
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Mapping

import requests

from drills.gslb import HealthState, ProbeResult, Transition

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
    ) -> None:
        self.urls = dict(urls)
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
            t = threading.Thread(target=self._run, args=(region,), name=f"probe-{region}", daemon=True)
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

    def _run(self, region: str) -> None:
        state = HealthState(region, self.misses)
        http = requests.Session()
        url = f"{self.urls[region]}/readyz"
        next_tick = time.monotonic()
        while not self._stop.is_set():
            result = probe(http, region, url, self.timeout_s, self._clock)
            transition = state.observe(result)
            with self._lock:
                self._results.append(result)
                if transition is not None:
                    self._transitions.append(transition)
            if transition is not None:
                log.info("GSLB: region %s is %s (%d misses in a row)", region, transition.health.value, transition.misses)
                self._on_transition(transition)
            next_tick += self.interval_s
            now = time.monotonic()
            if next_tick < now:  # a tick was missed (the machine stalled): keep the schedule's phase
                next_tick += ((now - next_tick) // self.interval_s + 1) * self.interval_s
            self._stop.wait(next_tick - now)


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
