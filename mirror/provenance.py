"""Where a copied record came from: provenance headers the replicator adds to every copy.

MirrorMaker 2 keeps this in its offset-sync topic; here a header travels with the record, so a
region folding a copied dialog event knows its offset in the region that wrote it (promotions
cut the log in those coordinates, dialog/fence.py) and the bench can time a copy end to end.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

# Provenance of a copied record (MirrorMaker 2 keeps it in offset syncs; a header travels with the record).
H_REGION = "regionsync.source.region"
H_TOPIC = "regionsync.source.topic"
H_PARTITION = "regionsync.source.partition"
H_OFFSET = "regionsync.source.offset"
PROVENANCE = (H_REGION, H_TOPIC, H_PARTITION, H_OFFSET)

Headers = list[tuple[str, str | bytes | None]]


@dataclass(frozen=True)
class Provenance:
    region: str
    topic: str
    partition: int
    offset: int


def provenance(headers: Any) -> Provenance | None:
    """Where a copied record came from (``Message.headers()``); None for a record written in this region."""
    found: dict[str, str] = {}
    for key, value in _pairs(headers):
        if key in PROVENANCE and value is not None:
            found[key] = value.decode("utf-8", "replace") if isinstance(value, bytes) else str(value)
    if len(found) != len(PROVENANCE):
        return None
    try:
        return Provenance(found[H_REGION], found[H_TOPIC], int(found[H_PARTITION]), int(found[H_OFFSET]))
    except ValueError:
        return None


def _pairs(headers: Any) -> list[tuple[str, str | bytes | None]]:
    if not headers:
        return []
    return list(headers.items()) if isinstance(headers, dict) else list(headers)


def copy_headers(headers: Any, source: str, topic: str, partition: int, offset: int) -> Headers:
    """The record's own headers (any stale provenance dropped) plus where it comes from."""
    kept: Headers = [(k, v) for k, v in _pairs(headers) if k not in PROVENANCE]
    return [*kept, (H_REGION, source.encode()), (H_TOPIC, topic.encode()), (H_PARTITION, str(partition).encode()),
            (H_OFFSET, str(offset).encode())]
