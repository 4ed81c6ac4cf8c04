"""The change agent's Prometheus metrics (exposed by ``python -m streams.app`` on
``Settings.metrics_port("changes")``)."""

from __future__ import annotations

from prometheus_client import Counter

from regionsync.metrics import DEAD_LETTERS  # noqa: F401 - one family for every worker (see there)

EMBEDDINGS_COMPUTED = Counter("regionsync_embeddings_computed_total", "Chunk vectors computed by the model")
EMBEDDINGS_CACHED = Counter("regionsync_embeddings_cached_total", "Chunk vectors reused from the embedding cache")
RECORDS_PRODUCED = Counter("regionsync_change_records_total", "Records sent to the chunks topic")
OFFSETS_SKIPPED = Counter("regionsync_change_offsets_skipped_total",
                          "Input offsets never served by the broker (holes a killed broker left; streams/gaps.py)")


def observe_batch(records: int, embedded: int, cached: int, dead_letters: int) -> None:
    RECORDS_PRODUCED.inc(records)
    EMBEDDINGS_COMPUTED.inc(embedded)
    EMBEDDINGS_CACHED.inc(cached)
    DEAD_LETTERS.labels("changes").inc(dead_letters)
