"""The region indexer's Prometheus metrics (exposed by ``python -m indexer.worker`` on
``Settings.metrics_port("indexer", region)``)."""

from __future__ import annotations

from prometheus_client import Counter, Gauge, Histogram

from regionsync.metrics import DEAD_LETTERS  # noqa: F401 - one family for every worker (see there)

# Commit at the source (Debezium's ts_ms, or the record's produced_ms for CMS events) -> the
# region's Milvus write returned. Buckets span a lone change (tens of ms) to a backlog (minutes).
FRESHNESS = Histogram(
    "regionsync_freshness_seconds",
    "Source commit to applied in the region's Milvus",
    ["region"],
    buckets=(0.05, 0.1, 0.25, 0.5, 1, 2, 5, 10, 30, 60, 120, 300, 600),
)
RECORDS_APPLIED = Counter("regionsync_index_records_applied_total", "Chunk records applied to the region", ["region"])
# Records the version guard refused: the region held that version or a newer one. Under faults
# these are the redeliveries and duplicates the pipeline absorbed (the fault suite counts them).
RECORDS_SKIPPED = Counter(
    "regionsync_index_records_skipped_total",
    "Chunk records not applied: the region already held that version or a newer one",
    ["region"],
)
APPLIED_OFFSET = Gauge(
    "regionsync_index_applied_offset",
    "Applied watermark: next offset of the chunks topic the region's indexer has committed",
    ["region", "partition"],
)
