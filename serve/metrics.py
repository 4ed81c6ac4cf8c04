"""The region service's Prometheus metrics, in a registry of its own (one per app).

Request metrics are labelled with the route *template* (``/sessions/{session_id}``), never the
raw path, so session ids cannot blow up the series count. Region gauges (index lag, applied
watermark, dialog lag, role) are read when Prometheus scrapes, cached for a few seconds so a
burst of scrapes does not hammer Kafka.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterator, Mapping
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Histogram, PlatformCollector, ProcessCollector
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.registry import Collector

log = logging.getLogger(__name__)

# The alert threshold (P99 > 500 ms) sits on a bucket edge so the quantile is exact there.
LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)


class ServiceMetrics:
    def __init__(
        self,
        region: str,
        readings: Callable[[], dict[str, Any]],
        cache_s: float = 5.0,
        answer_outcomes: Callable[[], Mapping[str, int]] | None = None,
    ) -> None:
        self.region = region
        self.registry = CollectorRegistry()
        ProcessCollector(registry=self.registry)
        PlatformCollector(registry=self.registry)
        self.latency = Histogram(
            "regionsync_http_request_duration_seconds", "Request latency per route",
            ["region", "route", "method"], buckets=LATENCY_BUCKETS, registry=self.registry,
        )
        self.requests = Counter(
            "regionsync_http_requests_total", "Requests per route and status code",
            ["region", "route", "method", "status"], registry=self.registry,
        )
        self.errors = Counter(
            "regionsync_http_errors_total", "Requests answered with a 5xx (server errors) per route",
            ["region", "route", "method"], registry=self.registry,
        )
        self.registry.register(_RegionCollector(region, readings, cache_s))
        if answer_outcomes is not None:  # only when a chat endpoint composes the answers
            self.registry.register(_AnswerCollector(region, answer_outcomes))

    def observe(self, route: str, method: str, status: int, seconds: float) -> None:
        self.latency.labels(self.region, route, method).observe(seconds)
        self.requests.labels(self.region, route, method, str(status)).inc()
        if status >= 500:
            self.errors.labels(self.region, route, method).inc()


class _RegionCollector(Collector):
    """Gauges read from Kafka/Postgres at scrape time (see the module docstring)."""

    def __init__(self, region: str, readings: Callable[[], dict[str, Any]], cache_s: float) -> None:
        self._region = region
        self._readings = readings
        self._cache_s = cache_s
        self._cached: tuple[float, dict[str, Any]] = (float("-inf"), {})

    def _read(self) -> dict[str, Any]:
        at, data = self._cached
        if time.monotonic() - at < self._cache_s:
            return data
        try:
            data = self._readings()
        except Exception as exc:  # noqa: BLE001 - a scrape must answer even when a dependency is down
            log.warning("region readings failed: %s", exc)
            data = {}
        self._cached = (time.monotonic(), data)
        return data

    def collect(self) -> Iterator[GaugeMetricFamily]:
        data = self._read()
        r = self._region
        up = GaugeMetricFamily("regionsync_region_readings_up", "1 if the last region readings succeeded", labels=["region"])
        up.add_metric([r], 1.0 if data else 0.0)
        yield up
        if not data:
            return
        lag = GaugeMetricFamily("regionsync_index_lag_records", "Chunk records the region has not applied", labels=["region"])
        lag.add_metric([r], float(data["index_lag"]))
        yield lag
        applied = GaugeMetricFamily(
            "regionsync_index_committed_offset", "Applied watermark: the region indexer's committed offset",
            labels=["region", "partition"],
        )
        for partition, offset in sorted(data["applied"].items()):
            applied.add_metric([r, str(partition)], float(offset))
        yield applied
        dlag = GaugeMetricFamily("regionsync_dialog_lag_events", "Session events not yet in the region's state store",
                                 labels=["region"])
        dlag.add_metric([r], float(data["dialog_lag"]))
        yield dlag
        active = GaugeMetricFamily("regionsync_region_active", "1 if this region writes dialog turns", labels=["region"])
        active.add_metric([r], 1.0 if data["active"] else 0.0)
        yield active


class _AnswerCollector(Collector):
    """Calls of the chat endpoint that composes answers, per outcome (``ok`` or why it failed:
    then the customer got the extractive answer; see serve/answers.py). The composer counts;
    this exposes its counts as a counter family."""

    def __init__(self, region: str, outcomes: Callable[[], Mapping[str, int]]) -> None:
        self._region = region
        self._outcomes = outcomes

    def collect(self) -> Iterator[CounterMetricFamily]:
        family = CounterMetricFamily(
            "regionsync_answer_llm_requests", "Calls of the answer chat endpoint per outcome (ok or the failure reason)",
            labels=["region", "outcome"],
        )
        for outcome, n in self._outcomes().items():
            family.add_metric([self._region, outcome], float(n))
        yield family
