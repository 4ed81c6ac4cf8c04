"""Row 6: dialog rebuild, i.e. how fast a standby region gets its conversations back.

The measurement belongs to the dialog package (``dialog.bench.run``: publish synthetic sessions,
replay the whole log into an empty store, snapshot, then restore a standby from the snapshot plus
a tail). Here it runs on the bench's stack, and its figures are reported in the table; when the
dialog package (or its benchmark) is not there, the row says "not available".
"""

from __future__ import annotations

import importlib
import logging
import time
from typing import Any

from regionsync.settings import Settings

log = logging.getLogger(__name__)


def measure(settings: Settings, sessions: int) -> dict[str, Any] | None:
    """The dialog benchmark's figures, or None if it is not available."""
    try:
        bench = importlib.import_module("dialog.bench")
    except ImportError:
        return None
    run = getattr(bench, "run", None)
    if run is None or len(settings.regions) < 2:
        return None
    started = time.monotonic()
    figures = dict(run(settings, sessions=sessions))
    figures["bench_seconds"] = round(time.monotonic() - started, 1)
    return figures
