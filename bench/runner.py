"""The bench's phases, in order, on a stack of its own.

1. start the stack; one warm-up document through every region (model loaded, groups joined);
2. row 1, the embedding limit, measured in this process while the pipeline is idle;
3. row 2, changed documents: the corpus is inserted (all new text) and flows to every region;
4. row 1 again (the throughput is compared with the mean of the two: see embed_limit);
5. row 8, search latency per region at the full corpus (top-5, status filter), then row 9, the
   same queries through each region's running service (GET /search), then row 10, a dialog
   turn's latency with local and with mirrored acknowledgements;
6. row 4, freshness, at ``freshness_load`` x row 2's docs/s;
7. row 5, the peer: seed LangChain's index from the same rows, change 1% of the documents in
   Postgres, time ours (commit -> every region) then theirs (re-run of ``index()``), check both;
8. row 3, updates that leave the text unchanged, then deletes, of every document;
9. row 6, dialog rebuild (the dialog package's own benchmark) on the same stack;
10. row 7, peak RSS of every process, sampled throughout; the stack is stopped.
"""

from __future__ import annotations

import datetime as dt
import logging
import os
import platform
import random
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager, nullcontext
from pathlib import Path
from typing import Any

from bench import (
    dialog_rebuild,
    embed_limit,
    freshness,
    http_search,
    links,
    peer_row,
    rss,
    search,
    throughput,
    turns,
    workload,
)
from bench.corpus import CorpusDoc
from bench.cpu import CpuMeter
from bench.options import BenchOptions, apply_timeout
from bench.profiling import Profiler
from bench.retry import Retries
from bench.stackrun import BenchStack
from bench.tracker import Tracker
from regionsync.revision import code_revision
from regionsync.settings import Settings
from stack import host
from streams.chunking import chunk_text

log = logging.getLogger(__name__)


def machine_info() -> dict[str, Any]:
    import onnxruntime  # the run-time embedder's engine; torch is not loaded here (settings.embedder)

    ram = 0.0
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                ram = int(line.split()[1]) / 1024**2
    except OSError:
        pass
    return {
        "cpu": host.cpu_model(), "cores": os.cpu_count(), "ram_gb": round(ram, 1), "load_start": list(os.getloadavg()),
        "python": platform.python_version(), "onnxruntime": onnxruntime.__version__,
    }


def run(base: Settings, options: BenchOptions, say: Callable[[str], None] = print) -> dict[str, Any]:
    """Run every phase; returns the results dict (see report.py). ``say`` gets progress lines."""
    return _Run(base, options, say).all()


class _Run:
    """One bench run: its stack, its results, and one method per phase (the module docstring's order)."""

    def __init__(self, base: Settings, options: BenchOptions, say: Callable[[str], None]) -> None:
        self.options = options
        self.say = say
        self.started = time.monotonic()
        code = code_revision()
        self.results: dict[str, Any] = {
            "commit": code["commit"], "code": code,
            "bench": "regionsync", "mode": "quick" if options.quick else "full",
            "started_at": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"), "machine": machine_info(),
        }
        self.progress(f"bench: reading the corpus ({options.n_docs} documents + reserve)")
        reserve = max(60, int(options.n_docs * 0.02) + int(options.freshness_seconds * 15))
        self.load = workload.Workload.from_corpus(options.n_docs, reserve,
                                                  lambda text: chunk_text(text, base.chunk_size, base.chunk_overlap))
        self.bench = BenchStack.create(base, options.state_dir)
        self.s = s = self.bench.settings
        self.results["settings"] = {k: getattr(s, k) for k in (
            "embed_model", "embed_batch_size", "embed_threads", "chunk_size", "chunk_overlap", "batch_max_events",
            "batch_window_s", "batch_linger_s", "regions", "topic_partitions")}
        chunks_per_doc = [chunk_text(d.body, s.chunk_size, s.chunk_overlap) for d in self.load.docs]
        self.total_chunks = sum(map(len, chunks_per_doc))
        self.results["corpus"] = {
            "source": "docstrings of the standard library, then of installed packages", "docs": len(self.load.docs),
            "chunks": self.total_chunks, "unique_chunks": len({t for c in chunks_per_doc for t in c}),
            "reserve_docs": len(self.load.reserve)}
        self.sampler = rss.RssSampler(s.state_dir).start()
        self.profiler = Profiler(options.profile_dir) if options.profile_dir else None
        self.cpu_meter = CpuMeter(lambda: {**rss.stack_pids(s.state_dir), "bench": os.getpid()})
        self.tracker: Tracker | None = None
        self.retries = Retries()

    def progress(self, msg: str) -> None:
        self.say(f"[{time.monotonic() - self.started:6.1f}s] {msg}")

    def row(self, key: str, measure: Callable[[], dict[str, Any] | None]) -> dict[str, Any] | None:
        """One row's figures into ``results[key]``; an error that survived the probes' retries
        fails this row (it says why in the report) and the bench goes on with the next."""
        try:
            figures = measure()
        except Exception as exc:  # noqa: BLE001 - the other rows stand on their own
            log.exception("bench row %s failed", key)
            self.results[key] = {"error": f"{type(exc).__name__}: {exc}"}
            self.progress(f"bench: {key} FAILED: {type(exc).__name__}: {exc}")
            return None
        self.results[key] = figures
        return figures

    @contextmanager
    def profiled(self, name: str, extra: dict[str, int] | None = None) -> Iterator[None]:
        # CPU seconds of every service always; py-spy's stacks of the Python ones with --profile.
        pids = {k: v for k, v in rss.stack_pids(self.s.state_dir).items()
                if k == "changes" or k.startswith("indexer-") or k.startswith("milvus-")}
        with self.cpu_meter.phase(name), (self.profiler.phase(name, {**pids, **(extra or {})}) if self.profiler
                                          else nullcontext()):
            yield

    def all(self) -> dict[str, Any]:
        try:
            self.progress(f"bench: starting the stack in {self.s.state_dir}")
            self.bench.start()
            self.results["stack"] = {"start_seconds": round(self.bench.start_seconds, 1)}
            self.tracker = tracker = Tracker(self.s, retries=self.retries).start()
            _warm_up(self.s, tracker)
            model, changed = self.embedding_and_changed(tracker)
            self.searches(model)
            # Row 5 changes documents row 4 did not, to texts row 4 did not use (none is in the cache).
            n_fresh, order, bodies = self.freshness(tracker, changed)
            self.row("peer", lambda: peer_row.measure(self.s, tracker, model, order[n_fresh:], bodies, self.options,
                                                     self.progress, self.profiled, self.retries))
            self.unchanged_and_deletes(tracker)
            self.progress(f"bench: row 6: dialog rebuild ({self.options.n_sessions} sessions)")
            self.row("dialog", self.dialog)
        finally:
            self.stop()
        self.results["retries"] = self.retries.to_dict()
        self.results["cpu"] = self.cpu_meter.phases
        if self.profiler is not None:
            self.results["profile"] = self.profiler.summaries
        self.results["machine"]["load_end"] = list(os.getloadavg())
        self.results["duration_s"] = round(time.monotonic() - self.started, 1)
        return self.results

    def embedding_and_changed(self, tracker: Tracker) -> tuple[Any, dict[str, Any] | None]:
        """Row 1 before, row 2 (the corpus inserted), row 1 after; row 2's ratio to row 1."""
        s, load = self.s, self.load
        self.progress(f"bench: stack up in {self.bench.start_seconds:.1f}s; loading the model for row 1")
        model = embed_limit.load_model(s)
        blocks = embed_limit.sample_blocks(s, [d.body for d in load.docs], self.options.n_embed_sample)
        before = embed_limit.measure(model, blocks)
        self.progress(f"bench: row 1 (before): {before.passages_per_s:.1f} passages/s")
        self.progress(f"bench: row 2: inserting {len(load.docs)} documents ({self.total_chunks} chunks)")

        def changed_row() -> dict[str, Any]:
            with self.profiled("changed"):
                changed = throughput.changed_documents(s, tracker, load, apply_timeout(self.total_chunks))
            return changed.to_dict()

        changed = self.row("changed", changed_row)
        after = embed_limit.measure(model, blocks)
        limit = (before.passages_per_s + after.passages_per_s) / 2
        self.results["embed_limit"] = {
            "before": {"passages": before.passages, "seconds": round(before.seconds, 2),
                       "passages_per_s": round(before.passages_per_s, 1)},
            "after": {"passages": after.passages, "seconds": round(after.seconds, 2),
                      "passages_per_s": round(after.passages_per_s, 1)},
            "passages_per_s": round(limit, 1),
        }
        if changed is not None:
            changed["ratio_to_limit"] = round(changed["passages_per_s"] / limit, 3)
            self.progress(f"bench: row 2: {changed['docs_per_s']:.1f} docs/s, {changed['passages_per_s']:.1f} "
                          f"passages/s (row 1: {limit:.1f}); ratio {changed['ratio_to_limit']:.2f}")
        return model, changed

    def searches(self, model: Any) -> None:
        """Rows 8, 9 and 10: search per region, through each service, a dialog turn's latency."""
        s, quick = self.s, self.options.quick
        n_queries = 50 if quick else 200
        queries = search.queries_from([d.body for d in self.load.docs], n_queries)
        self.progress(f"bench: row 8: search latency per region ({n_queries} top-{search.K} queries)")
        self.row("search", lambda: search.measure(s, model, queries, self.retries))
        self.progress("bench: row 9: search through each region's service (the same queries, GET /search)")
        self.row("http_search", lambda: http_search.measure(s, queries, self.retries))
        self.progress("bench: row 10: a dialog turn's latency, local vs mirrored acknowledgements")
        self.row("turns", lambda: turns.measure(s, 50 if quick else 300))
        self.progress("bench: row 11: a replicator's read of a broker, direct vs through its mutual-TLS edge")
        self.row("links", lambda: links.measure(s, s.source_region, 20_000 if quick else 100_000))

    def freshness(self, tracker: Tracker, changed: dict[str, Any] | None) -> tuple[int, list[str], Iterator[str]]:
        """Row 4 at a fraction of row 2's rate; returns how many documents of ``order`` it changed,
        ``order``, and the new texts it left unused."""
        options = self.options
        order = self.load.ids()[:]
        random.Random(options.seed).shuffle(order)
        bodies = self.load.reserve_bodies()
        # Without row 2's capacity (it failed), the slowest load the bench would ever choose.
        rate = max(0.5, options.freshness_load * (changed["docs_per_s"] if changed else 0.0))
        n_fresh = min(len(order) // 2, max(1, int(rate * options.freshness_seconds)))
        self.progress(f"bench: row 4: freshness at {rate:.1f} docs/s for {options.freshness_seconds:.0f}s")

        def freshness_row() -> dict[str, Any]:
            with self.profiled("freshness"):
                fresh = freshness.run(self.s, tracker, order[:n_fresh], bodies, rate, options.freshness_seconds,
                                      retries=self.retries)
            self.progress(f"bench: row 4: p50 {fresh.p50_ms:.0f} ms, p99 {fresh.p99_ms:.0f} ms")
            return {**fresh.to_dict(), "load_fraction": options.freshness_load}

        self.row("freshness", freshness_row)
        return n_fresh, order, bodies

    def unchanged_and_deletes(self, tracker: Tracker) -> None:
        """Row 3: title/tags updates of every document (no text changed), then deletes."""
        s, ids, quarter = self.s, self.load.ids(), apply_timeout(self.total_chunks // 4)
        self.progress(f"bench: row 3: updating title/tags of {len(ids)} documents")

        def unchanged_row() -> dict[str, Any]:
            with self.profiled("unchanged"):
                unchanged = throughput.unchanged_text_updates(s, tracker, ids, quarter)
            self.progress(f"bench: row 3: {unchanged.docs_per_s:.0f} docs/s, {unchanged.embedded} embedded")
            return unchanged.to_dict()

        def deletes_row() -> dict[str, Any]:
            with self.profiled("deletes"):
                deleted = throughput.deletes(s, tracker, ids, quarter)
            self.progress(f"bench: row 3: deletes {deleted.docs_per_s:.0f} docs/s")
            return deleted.to_dict()

        self.row("unchanged", unchanged_row)
        self.row("deletes", deletes_row)

    def dialog(self) -> dict[str, Any] | None:
        with self.profiled("dialog"):
            return dialog_rebuild.measure(self.s, self.options.n_sessions)

    def stop(self) -> None:
        if self.tracker is not None:
            self.tracker.close()
        peaks = self.sampler.stop()
        self.results["rss"] = {
            "services": {name: {"peak_bytes": p.peak_bytes, "processes": p.processes, "how": p.how}
                         for name, p in peaks.items()},
            "stack_total_bytes": sum(p.peak_bytes for p in peaks.values()),
            "bench_process_bytes": rss.self_peak_bytes(),
        }
        self.progress("bench: stopping the stack")
        self.bench.stop(keep_state=self.options.keep_state)


def _warm_up(s: Settings, tracker: Tracker) -> None:
    """One document in and out of every region: the change agent has loaded its model and every
    consumer has joined its group before anything is timed."""
    doc = CorpusDoc("bench:warm-up", "warm-up", "A first document to warm the pipeline up. " * 5, ())
    t0 = workload.insert_docs(s, [doc])
    tracker.wait_applied([doc.id], t0, timeout=300)
    t0 = workload.delete_docs(s, [doc.id])
    tracker.wait_applied([doc.id], t0, timeout=120)
