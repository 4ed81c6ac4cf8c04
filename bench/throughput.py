"""Rows 2 and 3: documents per second end to end, Postgres commit -> applied in every region.

Each phase writes its changes to the CMS table in commits of ``ROWS_PER_COMMIT`` rows, as a
bulk import or bulk edit would, and the clock runs from just before the first statement until
:class:`~bench.tracker.Tracker` sees every region's indexer commit past the last
record (see that module for why that means "upserted in the region's Milvus").

* changed documents: new text, so every chunk is embedded (the pipeline at its limit);
* unchanged-text updates: title and tags change, the body does not: chunk vectors come from the
  embedding cache and nothing should reach the model;
* deletes: every chunk of the document leaves every region.

"Embeddings computed" is counted twice, independently: the ``embedded`` field of the phase's
records on the chunks topic (what the change agent says it computed) and the growth of the shared
embedding cache (one row per vector the model produced).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

from bench import workload
from bench.tracker import Tracker
from regionsync.settings import Settings

log = logging.getLogger(__name__)


@dataclass
class PhaseResult:
    name: str
    docs: int
    seconds: float
    embedded: int  # vectors computed by the model, from the records
    cache_rows_added: int  # vectors computed by the model, from the cache table
    chunks: int = 0  # chunks carried by the phase's records
    region_seconds: dict[str, float] = field(default_factory=dict)

    @property
    def docs_per_s(self) -> float:
        return self.docs / self.seconds if self.seconds > 0 else 0.0

    @property
    def passages_per_s(self) -> float:
        return self.embedded / self.seconds if self.seconds > 0 else 0.0

    def to_dict(self) -> dict[str, Any]:
        out = asdict(self)
        out.update(docs_per_s=round(self.docs_per_s, 1), passages_per_s=round(self.passages_per_s, 1))
        return out


def run_phase(
    name: str,
    settings: Settings,
    tracker: Tracker,
    doc_ids: Sequence[str],
    write: Callable[[], float],
    timeout: float,
) -> PhaseResult:
    """``write`` makes the changes and returns the wall time taken before its first statement."""
    cache_before = workload.cache_rows(settings)
    started = write()
    applied = tracker.wait_applied(doc_ids, started, timeout)
    cache_added = workload.cache_rows(settings) - cache_before
    result = PhaseResult(
        name=name,
        docs=len(doc_ids),
        seconds=applied.done_s - started,
        embedded=applied.embedded,
        cache_rows_added=cache_added,
        chunks=sum(r.chunks for r in applied.records.values()),
        region_seconds={r: round(t - started, 3) for r, t in applied.region_done_s.items()},
    )
    log.info("%s: %d docs in %.2fs (%.1f docs/s), %d embedded", name, result.docs, result.seconds,
             result.docs_per_s, result.embedded)
    return result


def changed_documents(settings: Settings, tracker: Tracker, load: workload.Workload, timeout: float) -> PhaseResult:
    return run_phase("changed documents (new text)", settings, tracker, load.ids(),
                     lambda: workload.insert_docs(settings, load.docs), timeout)


def unchanged_text_updates(settings: Settings, tracker: Tracker, doc_ids: Sequence[str], timeout: float) -> PhaseResult:
    tag = f"reviewed-{int(time.time())}"
    return run_phase("updates, embedded text unchanged", settings, tracker, doc_ids,
                     lambda: workload.update_metadata(settings, doc_ids, tag), timeout)


def deletes(settings: Settings, tracker: Tracker, doc_ids: Sequence[str], timeout: float) -> PhaseResult:
    return run_phase("deletes", settings, tracker, doc_ids, lambda: workload.delete_docs(settings, doc_ids), timeout)
