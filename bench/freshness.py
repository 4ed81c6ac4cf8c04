"""Row 4: freshness, i.e. Postgres commit -> searchable in every region, under a steady load.

A writer changes one document per commit at a fixed rate (a fraction of the capacity the
changed-documents row measured), open loop: the schedule does not wait for earlier changes. Each
change gives the document new text that starts with a unique marker paragraph, so the document's
first chunk (deterministic id ``chunk_id(doc, 0)``) starts with the marker once, and only once,
that region serves the new version. One prober thread per region, with its own Milvus client,
fetches those chunk rows by id (the same read a search's result goes through) and notes when
the marker appears. A document's latency is its last region's time minus the wall time taken just
before ``COMMIT``.

To keep the probes from loading the servers they measure, a document is probed only once the
bench's tail of the chunks topic has seen its record (it cannot be in any region before), then
every ``probe_interval_s``: a reported latency is late by at most that interval plus one ``get``.
"""

from __future__ import annotations

import logging
import threading
import time
import uuid
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import psycopg
from pymilvus import MilvusClient

from bench.retry import Retries
from bench.tracker import Tracker
from indexer.milvus_client import quiet_pymilvus
from regionsync.settings import Settings
from streams.events import chunk_id

log = logging.getLogger(__name__)


@dataclass
class _Probe:
    doc_id: str
    marker: str
    commit_s: float
    found: dict[str, float] = field(default_factory=dict)


@dataclass
class FreshnessResult:
    rate_per_s: float
    seconds: float
    changes: int
    latencies_ms: list[float]
    not_seen: int  # changes not searchable in every region within the timeout
    # Where a change's time goes: commit -> Debezium's event on its topic -> the change agent's
    # record on the chunks topic -> searchable in the last region.
    stages_ms: dict[str, list[float]] = field(default_factory=dict)

    def _pct(self, values: Sequence[float], q: float) -> float:
        return float(np.percentile(values, q)) if values else float("nan")

    @property
    def p50_ms(self) -> float:
        return self._pct(self.latencies_ms, 50)

    @property
    def p99_ms(self) -> float:
        return self._pct(self.latencies_ms, 99)

    def to_dict(self) -> dict[str, Any]:
        return {
            "rate_per_s": round(self.rate_per_s, 2),
            "seconds": round(self.seconds, 1),
            "changes": self.changes,
            "not_seen": self.not_seen,
            "p50_ms": round(self.p50_ms, 1),
            "p90_ms": round(self._pct(self.latencies_ms, 90), 1),
            "p99_ms": round(self.p99_ms, 1),
            "max_ms": round(max(self.latencies_ms), 1) if self.latencies_ms else None,
            "stages_p50_ms": {k: round(self._pct(v, 50), 1) for k, v in self.stages_ms.items()},
            "stages_p99_ms": {k: round(self._pct(v, 99), 1) for k, v in self.stages_ms.items()},
        }


class _Prober(threading.Thread):
    def __init__(self, settings: Settings, region: str, probes: dict[str, _Probe], tracker: Tracker,
                 lock: threading.Lock, interval_s: float, retries: Retries) -> None:
        super().__init__(name=f"bench-probe-{region}", daemon=True)
        quiet_pymilvus()
        self.region = region
        self.collection = settings.collection
        # A busy Milvus server may refuse a connection for a moment.
        self.client = retries.call(f"milvus connect ({region})", lambda: MilvusClient(
            uri=settings.milvus_uri(region), token=settings.milvus_token.get_secret_value()))
        self.retries = retries
        self.probes = probes
        self.tracker = tracker
        self.lock = lock
        self.interval_s = interval_s
        self.stop = threading.Event()

    def run(self) -> None:
        try:
            while not self.stop.is_set():
                with self.lock:
                    waiting = [(cid, p) for cid, p in self.probes.items() if self.region not in p.found]
                ready = [(cid, p) for cid, p in waiting
                         if self.tracker.newest_since([p.doc_id], int(p.commit_s * 1000))]
                if ready:
                    try:
                        rows = self.client.get(self.collection, ids=[cid for cid, _ in ready], output_fields=["text"])
                    except Exception:  # noqa: BLE001 - a busy server: try again next round
                        self.retries.note(f"milvus get ({self.region})")
                        rows = []
                    now = time.time()
                    by_id = {str(r["id"]): str(r.get("text") or "") for r in rows}
                    with self.lock:
                        for cid, probe in ready:
                            if by_id.get(cid, "").startswith(probe.marker):
                                probe.found[self.region] = now
                self.stop.wait(self.interval_s)
        finally:
            self.client.close()


def run(
    settings: Settings,
    tracker: Tracker,
    doc_ids: Sequence[str],
    bodies: Iterator[str],
    rate_per_s: float,
    duration_s: float,
    timeout_s: float = 60.0,
    probe_interval_s: float = 0.01,
    retries: Retries | None = None,
) -> FreshnessResult:
    n = max(1, int(rate_per_s * duration_s))
    if n > len(doc_ids):
        n = len(doc_ids)
    probes: dict[str, _Probe] = {}
    lock = threading.Lock()
    retries = retries or Retries()
    probers: list[_Prober] = []
    tag = uuid.uuid4().hex[:8]
    try:
        for region in settings.regions:
            probers.append(_Prober(settings, region, probes, tracker, lock, probe_interval_s, retries))
            probers[-1].start()
        started = time.monotonic()
        with psycopg.connect(settings.pg_dsn()) as conn:
            for i in range(n):
                due = started + i / rate_per_s
                delay = due - time.monotonic()
                if delay > 0:
                    time.sleep(delay)
                doc_id = doc_ids[i]
                marker = f"Freshness probe {tag}-{i}."
                conn.execute("UPDATE documents SET body = %s, updated_at = now() WHERE id = %s",
                             (f"{marker}\n\n{next(bodies)}", doc_id))
                commit_s = time.time()
                with lock:
                    probes[chunk_id(doc_id, 0)] = _Probe(doc_id, marker, commit_s)
                conn.commit()
        writing_s = time.monotonic() - started
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            with lock:
                if all(len(p.found) == len(probers) for p in probes.values()):
                    break
            time.sleep(0.05)
    finally:
        for p in probers:
            p.stop.set()
        for p in probers:
            p.join(10)
    latencies: list[float] = []
    stages: dict[str, list[float]] = {"debezium": [], "change_agent": [], "regions": []}
    not_seen = 0
    for probe in probes.values():
        if len(probe.found) < len(probers):
            not_seen += 1
            continue
        commit_ms, searchable_ms = probe.commit_s * 1000, max(probe.found.values()) * 1000
        latencies.append(searchable_ms - commit_ms)
        rec = tracker.newest_since([probe.doc_id], int(commit_ms)).get(probe.doc_id)
        event_ms = tracker.source_event_ms(rec) if rec is not None else None
        if rec is not None and rec.produced_ms and event_ms is not None:
            stages["debezium"].append(event_ms - commit_ms)
            stages["change_agent"].append(rec.produced_ms - event_ms)
            stages["regions"].append(searchable_ms - rec.produced_ms)
    return FreshnessResult(rate_per_s, writing_s, n, latencies, not_seen, stages)
