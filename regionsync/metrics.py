"""Prometheus metric families shared by several workers.

``regionsync_dead_letters_total`` is one family labelled by stage (the change agent, each region's
indexer, each dialog worker), so an alert or a dashboard sums or splits it by label. It is defined
once, here on the ground floor beside the settings: the default registry refuses a second family of
the same name, so defining it in each worker's own metrics module breaks any process (and any test
session) that imports two of them.
"""

from __future__ import annotations

import logging

from prometheus_client import Counter, start_http_server

log = logging.getLogger(__name__)

DEAD_LETTERS = Counter("regionsync_dead_letters_total", "Records sent to the dead-letter topic", ["stage"])


def serve_metrics(port: int, addr: str, worker: str) -> int:
    """Serve the default registry's /metrics on ``port``; returns the port it listens on.

    A second instance of a worker on the same machine (scaling out before outgrowing it) finds
    the configured port taken. Its work matters more than its metrics, so it listens on a free
    port instead and says which: give each instance its own ``REGIONSYNC_METRICS_BASE_PORT`` for
    Prometheus to find it.
    """
    try:
        server, _thread = start_http_server(port, addr=addr)
    except OSError as exc:
        server, _thread = start_http_server(0, addr=addr)
        log.warning("%s: metrics port %d is taken (%s); /metrics is on port %d instead", worker, port,
                    exc.strerror or exc, server.server_port)
    return int(server.server_port)
