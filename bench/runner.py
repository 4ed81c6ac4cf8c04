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
from contextlib import AbstractContextManager, contextmanager, nullcontext
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pymilvus import MilvusClient

from bench import (
    dialog_rebuild,
    embed_limit,
    freshness,
    http_search,
    rss,
    search,
    throughput,
    turns,
    workload,
)
from bench.corpus import CorpusDoc
from bench.cpu import CpuMeter
from bench.profiling import Profiler
from bench.retry import Retries
from bench.stackrun import BenchStack
from bench.tracker import Tracker
from indexer.milvus_client import quiet_pymilvus
from regionsync.revision import code_revision
from regionsync.settings import Settings
from stack import host
from streams.chunking import chunk_text
from streams.events import chunk_id

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class BenchOptions:
    quick: bool = False
    docs: int | None = None  # documents loaded (default: 20,000; quick: 120)
    freshness_s: float | None = None  # length of the freshness load (default 60 s; quick 8 s)
    freshness_load: float = 0.2  # fraction of row 2's docs/s
    embed_sample: int | None = None  # passages per embedding-limit measurement (default 1,000; quick 192)
    peer_fractions: tuple[float, ...] = (0.001, 0.01)  # of the documents, changed for row 5 (5a, 5b)
    dialog_sessions: int | None = None  # default 10,000; quick 1,000
    profile_dir: Path | None = None
    state_dir: Path | None = None
    keep_state: bool = False
    seed: int = 7

    @property
    def n_docs(self) -> int:
        return self.docs or (120 if self.quick else 20_000)

    @property
    def n_sessions(self) -> int:
        return self.dialog_sessions or (1_000 if self.quick else 10_000)

    @property
    def freshness_seconds(self) -> float:
        return self.freshness_s or (8.0 if self.quick else 60.0)

    @property
    def n_embed_sample(self) -> int:
        return self.embed_sample or (192 if self.quick else 1_000)


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


def _apply_timeout(passages: int) -> float:
    # Generous: a machine loaded by others may embed at a third of its quiet speed.
    return 180.0 + passages / 10.0


def run(base: Settings, options: BenchOptions, say: Callable[[str], None] = print) -> dict[str, Any]:
    """Run every phase; returns the results dict (see report.py). ``say`` gets progress lines."""
    started = time.monotonic()

    def progress(msg: str) -> None:
        say(f"[{time.monotonic() - started:6.1f}s] {msg}")

    code = code_revision()
    results: dict[str, Any] = {
        "commit": code["commit"], "code": code,
        "bench": "regionsync", "mode": "quick" if options.quick else "full",
        "started_at": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"), "machine": machine_info(),
    }
    progress(f"bench: reading the corpus ({options.n_docs} documents + reserve)")
    reserve = max(60, int(options.n_docs * 0.02) + int(options.freshness_seconds * 15))
    load = workload.Workload.from_corpus(options.n_docs, reserve,
                                         lambda text: chunk_text(text, base.chunk_size, base.chunk_overlap))
    bench = BenchStack.create(base, options.state_dir)
    s = bench.settings
    results["settings"] = {
        k: getattr(s, k) for k in ("embed_model", "embed_batch_size", "embed_threads", "chunk_size", "chunk_overlap",
                                   "batch_max_events", "batch_window_s", "batch_linger_s", "regions", "topic_partitions")
    }
    chunks_per_doc = [chunk_text(d.body, s.chunk_size, s.chunk_overlap) for d in load.docs]
    results["corpus"] = {"source": "docstrings of the standard library, then of installed packages",
                         "docs": len(load.docs), "chunks": sum(map(len, chunks_per_doc)),
                         "unique_chunks": len({t for c in chunks_per_doc for t in c}), "reserve_docs": len(load.reserve)}
    sampler = rss.RssSampler(s.state_dir).start()
    profiler = Profiler(options.profile_dir) if options.profile_dir else None
    cpu_meter = CpuMeter(lambda: {**rss.stack_pids(s.state_dir), "bench": os.getpid()})
    tracker: Tracker | None = None
    retries = Retries()

    def row(key: str, measure: Callable[[], dict[str, Any] | None]) -> dict[str, Any] | None:
        """One row's figures into ``results[key]``; an error that survived the probes' retries
        fails this row (it says why in the report) and the bench goes on with the next."""
        try:
            figures = measure()
        except Exception as exc:  # noqa: BLE001 - the other rows stand on their own
            log.exception("bench row %s failed", key)
            results[key] = {"error": f"{type(exc).__name__}: {exc}"}
            progress(f"bench: {key} FAILED: {type(exc).__name__}: {exc}")
            return None
        results[key] = figures
        return figures

    try:
        progress(f"bench: starting the stack in {s.state_dir}")
        bench.start()
        results["stack"] = {"start_seconds": round(bench.start_seconds, 1)}
        tracker = Tracker(s, retries=retries).start()
        _warm_up(s, tracker)
        progress(f"bench: stack up in {bench.start_seconds:.1f}s; loading the model for row 1")
        model = embed_limit.load_model(s)
        blocks = embed_limit.sample_blocks(s, [d.body for d in load.docs], options.n_embed_sample)
        before = embed_limit.measure(model, blocks)
        progress(f"bench: row 1 (before): {before.passages_per_s:.1f} passages/s")

        def pids() -> dict[str, int]:
            return {k: v for k, v in rss.stack_pids(s.state_dir).items()
                    if k == "changes" or k.startswith("indexer-") or k.startswith("milvus-")}

        @contextmanager
        def profiled(name: str, extra: dict[str, int] | None = None) -> Iterator[None]:
            # CPU seconds of every service always; py-spy's stacks of the Python ones with --profile.
            with cpu_meter.phase(name), (profiler.phase(name, {**pids(), **(extra or {})}) if profiler
                                         else nullcontext()):
                yield

        trk = tracker
        total_chunks = results["corpus"]["chunks"]
        progress(f"bench: row 2: inserting {len(load.docs)} documents ({total_chunks} chunks)")

        def changed_row() -> dict[str, Any]:
            with profiled("changed"):
                changed = throughput.changed_documents(s, trk, load, _apply_timeout(total_chunks))
            return changed.to_dict()

        changed = row("changed", changed_row)
        after = embed_limit.measure(model, blocks)
        limit = (before.passages_per_s + after.passages_per_s) / 2
        results["embed_limit"] = {
            "before": {"passages": before.passages, "seconds": round(before.seconds, 2),
                       "passages_per_s": round(before.passages_per_s, 1)},
            "after": {"passages": after.passages, "seconds": round(after.seconds, 2),
                      "passages_per_s": round(after.passages_per_s, 1)},
            "passages_per_s": round(limit, 1),
        }
        if changed is not None:
            changed["ratio_to_limit"] = round(changed["passages_per_s"] / limit, 3)
            progress(f"bench: row 2: {changed['docs_per_s']:.1f} docs/s, {changed['passages_per_s']:.1f} "
                     f"passages/s (row 1: {limit:.1f}); ratio {changed['ratio_to_limit']:.2f}")

        n_queries = 50 if options.quick else 200
        queries = search.queries_from([d.body for d in load.docs], n_queries)
        progress(f"bench: row 8: search latency per region ({n_queries} top-{search.K} queries)")
        row("search", lambda: search.measure(s, model, queries, retries))
        progress("bench: row 9: search through each region's service (the same queries, GET /search)")
        row("http_search", lambda: http_search.measure(s, queries, retries))
        progress("bench: row 10: a dialog turn's latency, local vs mirrored acknowledgements")
        row("turns", lambda: turns.measure(s, 50 if options.quick else 300))

        rng = random.Random(options.seed)
        ids = load.ids()
        order = ids[:]
        rng.shuffle(order)
        bodies = load.reserve_bodies()
        # Without row 2's capacity (it failed), the slowest load the bench would ever choose.
        rate = max(0.5, options.freshness_load * (changed["docs_per_s"] if changed else 0.0))
        n_fresh = min(len(order) // 2, max(1, int(rate * options.freshness_seconds)))
        progress(f"bench: row 4: freshness at {rate:.1f} docs/s for {options.freshness_seconds:.0f}s")

        def freshness_row() -> dict[str, Any]:
            with profiled("freshness"):
                fresh = freshness.run(s, trk, order[:n_fresh], bodies, rate, options.freshness_seconds,
                                      retries=retries)
            progress(f"bench: row 4: p50 {fresh.p50_ms:.0f} ms, p99 {fresh.p99_ms:.0f} ms")
            return {**fresh.to_dict(), "load_fraction": options.freshness_load}

        row("freshness", freshness_row)
        row("peer", lambda: _peer(s, trk, model, order[n_fresh:], bodies, options, progress, profiled, retries))

        progress(f"bench: row 3: updating title/tags of {len(ids)} documents")

        def unchanged_row() -> dict[str, Any]:
            with profiled("unchanged"):
                unchanged = throughput.unchanged_text_updates(s, trk, ids, _apply_timeout(total_chunks // 4))
            progress(f"bench: row 3: {unchanged.docs_per_s:.0f} docs/s, {unchanged.embedded} embedded")
            return unchanged.to_dict()

        def deletes_row() -> dict[str, Any]:
            with profiled("deletes"):
                deleted = throughput.deletes(s, trk, ids, _apply_timeout(total_chunks // 4))
            progress(f"bench: row 3: deletes {deleted.docs_per_s:.0f} docs/s")
            return deleted.to_dict()

        row("unchanged", unchanged_row)
        row("deletes", deletes_row)

        progress(f"bench: row 6: dialog rebuild ({options.n_sessions} sessions)")
        def dialog_row() -> dict[str, Any] | None:
            with profiled("dialog"):
                return dialog_rebuild.measure(s, options.n_sessions)

        row("dialog", dialog_row)
    finally:
        if tracker is not None:
            tracker.close()
        peaks = sampler.stop()
        results["rss"] = {
            "services": {name: {"peak_bytes": p.peak_bytes, "processes": p.processes, "how": p.how}
                         for name, p in peaks.items()},
            "stack_total_bytes": sum(p.peak_bytes for p in peaks.values()),
            "bench_process_bytes": rss.self_peak_bytes(),
        }
        progress("bench: stopping the stack")
        bench.stop(keep_state=options.keep_state)
    results["retries"] = retries.to_dict()
    results["cpu"] = cpu_meter.phases
    if profiler is not None:
        results["profile"] = profiler.summaries
    results["machine"]["load_end"] = list(os.getloadavg())
    results["duration_s"] = round(time.monotonic() - started, 1)
    return results


def _warm_up(s: Settings, tracker: Tracker) -> None:
    """One document in and out of every region: the change agent has loaded its model and every
    consumer has joined its group before anything is timed."""
    doc = CorpusDoc("bench:warm-up", "warm-up", "A first document to warm the pipeline up. " * 5, ())
    t0 = workload.insert_docs(s, [doc])
    tracker.wait_applied([doc.id], t0, timeout=300)
    t0 = workload.delete_docs(s, [doc.id])
    tracker.wait_applied([doc.id], t0, timeout=120)


def _peer(
    s: Settings,
    tracker: Tracker,
    model: Any,
    candidates: list[str],
    bodies: Iterator[str],
    options: BenchOptions,
    progress: Callable[[str], None],
    profiled: Callable[..., AbstractContextManager[None]],
    retries: Retries,
) -> dict[str, Any]:
    try:
        from bench import peer as peer_mod
    except ImportError as exc:
        return {"available": False, "reason": f"{exc.name} not installed: pip install -e '.[bench]'"}
    from embedding.cache import PostgresEmbeddingCache

    peer = peer_mod.Peer(s, model)
    try:
        progress("bench: row 5: seeding LangChain's index (index() with vectors from our embedding cache)")
        seed = peer.reindex(cache=PostgresEmbeddingCache.from_settings(s))
        corpus_docs = len({d.metadata["source"] for d in peer.source_documents()})
        runs = []
        for fraction in options.peer_fractions:
            n = max(2, round(fraction * corpus_docs))
            changed = [(doc_id, next(bodies)) for doc_id in candidates[:n]]
            candidates = candidates[n:]  # each run changes documents of its own
            runs.append(_peer_run(s, tracker, peer, changed, fraction, progress, profiled, retries))
        return {
            "available": True,
            "corpus_docs": corpus_docs,
            "runs": runs,
            "seed": seed.to_dict(),
            "setup": f"langchain_core.indexing.index(cleanup='incremental', batch_size={peer_mod.BATCH_SIZE}), "
                     f"SQLRecordManager on SQLite, langchain_milvus.Milvus ({peer_mod.DOCUMENTS_INDEX_TYPE}/"
                     f"{peer_mod.METRIC}) on region "
                     f"{s.regions[0]}'s Milvus; ours updates {len(s.regions)} regions",
        }
    finally:
        peer.close()


def _peer_run(
    s: Settings,
    tracker: Tracker,
    peer: Any,
    changed: list[tuple[str, str]],
    fraction: float,
    progress: Callable[[str], None],
    profiled: Callable[..., AbstractContextManager[None]],
    retries: Retries,
) -> dict[str, Any]:
    """Change ``changed`` in Postgres; time ours (commit -> every region), then theirs (a re-run of
    LangChain's ``index()`` over the source), and check that both hold the new text."""
    n = len(changed)
    progress(f"bench: row 5 ({fraction:.1%}): changing {n} documents; ours first")
    with profiled(f"peer-ours-{fraction:g}"):
        t0 = workload.update_bodies(s, changed)
        applied = tracker.wait_applied([d for d, _ in changed], t0, _apply_timeout(40 * n))
    ours_s = applied.done_s - t0
    progress(f"bench: row 5 ({fraction:.1%}): ours {ours_s:.2f}s; now LangChain's index() re-run")
    with profiled(f"peer-theirs-{fraction:g}", {"bench": os.getpid()}):
        theirs = peer.reindex()
    expected = {doc_id: chunk_text(body, s.chunk_size, s.chunk_overlap) for doc_id, body in changed}
    problems = (_checked(retries, "peer check", lambda: _check_peer(peer, expected))
                + _checked(retries, "region check", lambda: _check_regions(s, expected)))
    return {
        "fraction": fraction,
        "changed_docs": n,
        "changed_passages": sum(map(len, expected.values())),
        "ours_s": round(ours_s, 3),
        "ours_region_s": {r: round(t - t0, 3) for r, t in applied.region_done_s.items()},
        "ours_embedded": applied.embedded,
        "theirs_s": round(theirs.seconds, 3),
        "theirs": theirs.to_dict(),
        "speedup": round(theirs.seconds / ours_s, 2) if ours_s > 0 else None,
        "checked": not problems,
        "problems": problems[:20],
    }

def _checked(retries: Retries, what: str, check: Callable[[], list[str]]) -> list[str]:
    """A check that cannot run (after its retries) is a problem to report, not a reason to lose
    the row's figures."""
    try:
        return retries.call(what, check)
    except Exception as exc:  # noqa: BLE001 - e.g. a Milvus server too busy to answer in time
        return [f"check could not run: {type(exc).__name__}: {exc}"]


def _check_peer(peer: Any, expected: dict[str, list[str]]) -> list[str]:
    problems = []
    got = peer.texts(list(expected))
    for doc_id, texts in expected.items():
        if got.get(doc_id) != texts:
            problems.append(f"peer: {doc_id} holds {len(got.get(doc_id, []))} chunks that differ from the new text")
    count = peer.count()
    sources = peer.source_documents()
    if count != len(sources):
        problems.append(f"peer: {count} rows in the collection, the source has {len(sources)} chunks")
    return problems


def _check_regions(s: Settings, expected: dict[str, list[str]]) -> list[str]:
    quiet_pymilvus()
    problems = []
    for region in s.regions:
        client = MilvusClient(uri=s.milvus_uri(region), token=s.milvus_token.get_secret_value(), timeout=60)
        try:
            ids = {chunk_id(d, i): (d, i) for d, texts in expected.items() for i in range(len(texts))}
            rows = client.get(s.collection, ids=list(ids), output_fields=["text"], timeout=60)
            found = {str(r["id"]): str(r["text"]) for r in rows}
            for cid, (doc_id, i) in ids.items():
                if found.get(cid) != expected[doc_id][i]:
                    problems.append(f"{region}: {doc_id}#{i} does not hold the new text")
        finally:
            client.close()
    return problems
