"""Durations (``--every 24h``) and points in time (``--from-time``) on the command line: pure."""

from __future__ import annotations

import re
from datetime import UTC, datetime

from drills.errors import BadInput

_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400}
_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([smhd]?)\s*$")


def parse_duration(text: str) -> float:
    """``"24h"`` -> 86400.0; units s, m, h, d (none: seconds). Must be positive."""
    match = _DURATION.match(text)
    if not match or float(match.group(1)) <= 0:
        raise BadInput(f"{text!r} is not a duration such as 90s, 30m, 24h or 1d")
    return float(match.group(1)) * _UNITS[match.group(2) or "s"]


def parse_time_ms(text: str) -> int:
    """Epoch milliseconds, or an ISO 8601 time (no zone: UTC) -> epoch milliseconds."""
    if text.strip().isdigit():
        return int(text)
    try:
        when = datetime.fromisoformat(text.strip())
    except ValueError as exc:
        raise BadInput(f"{text!r} is neither epoch milliseconds nor an ISO 8601 time (2026-11-30T12:00:00Z)") from exc
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    return int(when.timestamp() * 1000)
