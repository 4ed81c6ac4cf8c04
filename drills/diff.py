"""Which documents differ between the source of truth and one region, and how: pure, plain data.

The classes (one per document and region, the worst one wins):

* ``missing``: the source has the document (a published row, or a CMS document whose newest
  event is an upsert) and the region holds no chunk of it;
* ``stale``: the region holds one whole state of the document, but not the source's (other text,
  title, tags, or an older CMS version);
* ``chunks_wrong``: the region's chunks do not form one whole state (a gap in the chunk indexes,
  several versions, the right text hash over other chunk texts);
* ``deleted_or_unpublished``: the region holds chunks of a document the source does not publish:
  its row is unpublished or gone, its newest CMS event is a delete, or it is in no source at all.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass
from enum import StrEnum
from typing import Any

from drills.verify import CHUNKS_WRONG, ExpectedDoc, document_differences


class DriftKind(StrEnum):
    MISSING = "missing"
    STALE = "stale"
    CHUNKS_WRONG = "chunks_wrong"
    DELETED_OR_UNPUBLISHED = "deleted_or_unpublished"


class Origin(StrEnum):
    """Where the source of truth of a document is (decides how a repair re-drives it)."""

    TABLE = "table"  # a row of the captured table, published or not
    CMS = "cms"  # the newest event of the CMS producers' topic
    NONE = "none"  # neither: the document should be in no region
    # The region holds it from the CMS producers' topic, which no longer has any event of it (the
    # topic was recreated, as after the embedded broker's restart, or retention removed them):
    # the source of truth for it is lost, so nothing may conclude that it should be deleted.
    CMS_LOST = "cms_history_lost"


@dataclass(frozen=True)
class Drift:
    region: str
    doc_id: str
    kind: DriftKind
    origin: Origin
    detail: str
    held_version: int | None = None  # the highest version of the region's chunks, if any

    def to_dict(self) -> dict[str, Any]:
        out = asdict(self)
        out["kind"] = self.kind.value
        out["origin"] = self.origin.value
        return out


@dataclass(frozen=True)
class SourceView:
    """The source of truth as the classification needs it.

    ``expected``: what every region must hold (published rows + CMS documents). ``table_status``:
    every row of the table, published or not (id -> status). ``cms_versions``: the newest CMS
    event per document (id -> (version, op)), deletes included.
    """

    expected: Mapping[str, ExpectedDoc]
    table_status: Mapping[str, str]
    cms_versions: Mapping[str, tuple[int, str]]

    def origin(self, doc_id: str) -> Origin:
        if doc_id in self.table_status:
            return Origin.TABLE
        if doc_id in self.cms_versions:
            return Origin.CMS
        return Origin.NONE

    def absent_reason(self, doc_id: str) -> str:
        if doc_id in self.table_status:
            return f"row is {self.table_status[doc_id] or 'not published'} in the table"
        if doc_id in self.cms_versions:
            version, op = self.cms_versions[doc_id]
            return f"newest CMS event (version {version}) is {'a delete' if op == 'delete' else 'unpublished'}"
        return "in no source (row deleted, no CMS event)"


def classify_region(region: str, source: SourceView, chunk_rows: Iterable[Mapping[str, Any]]) -> list[Drift]:
    """Every drifted document of ``region``, sorted by doc id."""
    by_doc: dict[str, list[dict[str, Any]]] = {}
    for row in chunk_rows:
        by_doc.setdefault(str(row["doc_id"]), []).append(dict(row))
    drifts: list[Drift] = []
    for doc_id in sorted(set(source.expected) | set(by_doc)):
        rows = by_doc.get(doc_id)
        held = _held_version(rows)
        origin = source.origin(doc_id)
        if origin is Origin.NONE and rows is not None and held_from_cms(rows):
            origin = Origin.CMS_LOST
        if rows is None:
            drifts.append(Drift(region, doc_id, DriftKind.MISSING, origin, "no chunk in the region"))
        elif doc_id not in source.expected:
            reason = source.absent_reason(doc_id)
            if origin is Origin.CMS_LOST:
                reason = f"held from the CMS topic ({_where(rows)}), which has no event of it any more"
            drifts.append(Drift(region, doc_id, DriftKind.DELETED_OR_UNPUBLISHED, origin, reason, held))
        else:
            found = document_differences(region, source.expected[doc_id], rows)
            if found:
                kind = DriftKind.CHUNKS_WRONG if any(k == CHUNKS_WRONG for k, _ in found) else DriftKind.STALE
                detail = "; ".join(message.removeprefix(f"{region}: ") for _, message in found)
                drifts.append(Drift(region, doc_id, kind, origin, detail, held))
    return drifts


def held_from_cms(rows: Sequence[Mapping[str, Any]]) -> bool:
    """True when the region's chunks of a document came from the CMS producers' topic."""
    return any(isinstance(r.get("source"), Mapping) and r["source"].get("kind") == "cms" for r in rows)


def _where(rows: Sequence[Mapping[str, Any]]) -> str:
    src: Mapping[str, Any] = next((r["source"] for r in rows if isinstance(r.get("source"), Mapping)), {})
    return f"{src.get('topic')}[{src.get('partition')}]@{src.get('offset')}"


def counts_by_kind(drifts: Sequence[Drift]) -> dict[str, int]:
    out = {kind.value: 0 for kind in DriftKind}
    for drift in drifts:
        out[drift.kind.value] += 1
    return out


def _held_version(rows: Sequence[Mapping[str, Any]] | None) -> int | None:
    if not rows:
        return None
    return max(int(r["version"]) for r in rows)
