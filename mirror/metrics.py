"""The replicators' Prometheus metrics (``python -m cli.replicator`` serves them on
``Settings.metrics_port("mirror", target, source)``). The alert "RPO at risk" in
deploy/prometheus/alerts.yml is written on ``regionsync_mirror_lag_seconds``."""

from __future__ import annotations

from prometheus_client import Counter, Gauge, Histogram

RECORDS = Counter("regionsync_mirror_records_total", "Records copied into the target region",
                  ["source", "target", "topic"])
# Records of the source partition not yet in the target (the source's end as last seen minus the
# replicator's checkpoint): what the target would lose if the source region were lost now.
LAG_RECORDS = Gauge("regionsync_mirror_lag_records", "Records of the source partition not yet copied",
                    ["source", "target", "topic", "partition"])
# Now minus the source time up to which the partition is known complete in the target: the age
# of the oldest record that may be missing. Grows while the link is cut or the replicator paused,
# also when nothing is written (a quiet source is confirmed complete every mirror_idle_check_s).
LAG_SECONDS = Gauge("regionsync_mirror_lag_seconds", "Age of the oldest record that may not be in the target yet",
                    ["source", "target", "topic", "partition"])
SOURCE_UP = Gauge("regionsync_mirror_source_up", "1 while the source region's broker answers the replicator",
                  ["source", "target"])
PAUSED = Gauge("regionsync_mirror_paused", "1 while the replicator is paused (regionsync mirror pause)",
               ["source", "target"])
LATENCY = Histogram(
    "regionsync_mirror_replication_latency_seconds",
    "Source record timestamp to acknowledged in the target region",
    ["source", "target"],
    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300),
)
