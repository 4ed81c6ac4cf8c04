"""How this project uses the pymilvus client library, whoever holds the client (sink, probes, bench)."""

from __future__ import annotations

import logging


def quiet_pymilvus() -> None:
    # pymilvus installs its own handler (propagate=False) and logs a full traceback at ERROR for
    # every failed RPC. Our callers turn failures into exceptions and log them once, so pymilvus'
    # own lines would only repeat them (once per retry during an outage).
    logging.getLogger("pymilvus").setLevel(logging.CRITICAL)
