"""What the change agent last told the regions about each document's text.

A CMS edit that changes only a title or tags arrives with the full text under REPLICA IDENTITY
DEFAULT (and always from CMS producers), without an old row to compare with. The agent remembers
the content hash of the newest record it emitted per document, so it can tell "same text as the
regions already hold" and send a metadata record instead of every chunk's vector again.

This is an optimisation, never a source of truth: the memory is bounded (least recently used
documents are forgotten: their next change is a full record), starts empty after a restart, and
may be stale after a partition moved to another agent and back. A stale entry cannot do harm: a
metadata record carries the hash, and a region whose stored hash differs refuses to re-label and
asks for the whole document (indexer/plan.py, streams/heal.py).
"""

from __future__ import annotations

from collections import OrderedDict

from streams.events import DocRecord, RecordOp


class RecentHashes:
    def __init__(self, max_docs: int = 100_000) -> None:
        self.max_docs = max_docs
        self._hashes: OrderedDict[str, str] = OrderedDict()

    def get(self, doc_id: str) -> str | None:
        return self._hashes.get(doc_id)

    def remember(self, record: DocRecord) -> None:
        """Note a record once it was acknowledged by the broker."""
        if record.op is RecordOp.DELETE:
            self._hashes.pop(record.doc_id, None)
            return
        if record.content_hash is None:
            # A meta record with unknown text (TOAST): the text did not change, the hash we know
            # (if any) still holds.
            if record.doc_id in self._hashes:
                self._hashes.move_to_end(record.doc_id)
            return
        self._hashes[record.doc_id] = record.content_hash
        self._hashes.move_to_end(record.doc_id)
        while len(self._hashes) > self.max_docs:
            self._hashes.popitem(last=False)

    def forget(self) -> None:
        """Drop everything (e.g. when partitions were reassigned)."""
        self._hashes.clear()

    def __len__(self) -> int:
        return len(self._hashes)
