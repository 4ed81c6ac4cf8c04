"""Prometheus metric families shared by several workers.

``regionsync_dead_letters_total`` is one family labelled by stage (the change agent, each region's
indexer, each dialog worker), so an alert or a dashboard sums or splits it by label. It is defined
once, here on the ground floor beside the settings: the default registry refuses a second family of
the same name, so defining it in each worker's own metrics module breaks any process (and any test
session) that imports two of them.
"""

from __future__ import annotations

from prometheus_client import Counter

DEAD_LETTERS = Counter("regionsync_dead_letters_total", "Records sent to the dead-letter topic", ["stage"])
