"""``--rate N/s``: a token bucket with an injected clock (tests run it on a fake one)."""

from __future__ import annotations

import time
from collections.abc import Callable

from drills.errors import BadInput

EPSILON = 1e-9


class RateLimiter:
    """At most ``rate`` acquisitions per second on average, bursts up to one second's worth.
    ``rate`` None or <= 0: no limit."""

    def __init__(
        self,
        rate: float | None,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        self.rate = rate if rate and rate > 0 else None
        self._clock = clock
        self._sleep = sleep
        self._burst = max(1.0, self.rate or 1.0)
        self._tokens = 1.0  # start with one, not a full second's burst: --rate 5 sends 5 in the first second
        self._last = clock()

    def wait_time(self) -> float:
        """Seconds until one token is available (0 = now); refills from the clock."""
        if self.rate is None:
            return 0.0
        now = self._clock()
        self._tokens = min(self._burst, self._tokens + (now - self._last) * self.rate)
        self._last = now
        # Refills are float sums: 0.1 s x 10/s can come out a hair under one token, and a wait of
        # 1e-17 s would not move a clock: within EPSILON of a token counts as a token.
        return 0.0 if self._tokens >= 1.0 - EPSILON else (1.0 - self._tokens) / self.rate

    def acquire(self) -> None:
        while (delay := self.wait_time()) > 0:
            self._sleep(delay)
        if self.rate is not None:
            self._tokens = max(0.0, self._tokens - 1.0)


def parse_rate(text: str) -> float:
    """``"200/s"``, ``"200"`` -> 200.0."""
    value = text.strip().removesuffix("/s")
    try:
        rate = float(value)
    except ValueError as exc:
        raise BadInput(f"--rate {text!r}: expected records per second, e.g. 200/s") from exc
    if rate <= 0:
        raise BadInput(f"--rate {text!r} must be positive")
    return rate
