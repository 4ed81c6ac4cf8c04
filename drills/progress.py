"""Progress bars for long scans and replays: tqdm on stderr, shown only on a terminal.

stdout stays clean for ``--json`` output and pipes; a job run by cron or Kubernetes (no
terminal) logs its summary instead of redrawing a bar into its log file.
"""

from __future__ import annotations

from typing import Any

from tqdm import tqdm


def bar(total: int | None, desc: str, unit: str = "rec", **kwargs: Any) -> tqdm[Any]:
    return tqdm(total=total, desc=desc, unit=unit, unit_scale=True, leave=False, disable=None, dynamic_ncols=True, **kwargs)
