"""Row 5: the peer. LangChain's indexing API on the same Milvus is seeded from the same rows; a
fraction of the documents is changed in Postgres; ours is timed (commit -> every region), then
theirs (a re-run of ``index()`` over the source); both are checked to hold the new text."""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager
from typing import Any

from pymilvus import MilvusClient

from bench import workload
from bench.options import BenchOptions, apply_timeout
from bench.retry import Retries
from bench.tracker import Tracker
from indexer.milvus_client import quiet_pymilvus
from regionsync.settings import Settings
from streams.chunking import chunk_text
from streams.events import chunk_id


def measure(
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
        applied = tracker.wait_applied([d for d, _ in changed], t0, apply_timeout(40 * n))
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
