"""The change agent's batch step, free of Faust so it can be run and tested on its own.

``process(messages)`` parses a batch of raw records from the Debezium and CMS topics, sends
poison records to the dead-letter topic, keeps the newest change per document, chunks and embeds
the texts that changed (all of the batch in one model call, cached vectors reused), and sends one
:class:`DocRecord` per document to the chunks topic. It returns only after the output has been
acknowledged (``output.flush()``), so the caller may then let the input offsets be committed:
a crash before that point re-delivers the batch, and re-applying a record is harmless.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Protocol

import numpy as np

from mirror import policy
from regionsync.settings import Settings
from streams import cms, debezium
from streams.capture import CaptureSpec
from streams.chunking import chunk_text
from streams.deadletter import DeadLetter
from streams.decide import newest_per_document, texts_to_embed, to_record, unchanged_text
from streams.errors import PoisonEvent
from streams.events import DocRecord, DocumentChange, SourceRef
from streams.heal import (
    HEALABLE_SOURCES,
    HealRequest,
    SourceEvents,
    SourceRows,
    healed_change,
    healed_from_event,
    newest_requests,
)
from streams.recent import RecentHashes

log = logging.getLogger(__name__)

STAGE = "changes"


@dataclass(frozen=True)
class RawMessage:
    topic: str
    partition: int
    offset: int
    key: bytes | None
    value: bytes | None
    timestamp_ms: int = 0


class TextEmbedder(Protocol):
    def embed_texts(self, texts: Sequence[str]) -> tuple[np.ndarray, list[bool]]:
        """Vectors for ``texts`` (float32, one row each) and, per text, whether it was computed
        now (True) or found in the cache (False)."""
        ...


class RecordOutput(Protocol):
    """Where the agent's output goes. ``flush`` returns only when everything sent is acknowledged
    and raises if anything was not: the input offsets must then not be committed."""

    def send_record(self, record: DocRecord) -> None: ...

    def send_dead_letter(self, letter: DeadLetter) -> None: ...

    def flush(self) -> None: ...


@dataclass
class BatchResult:
    records: list[DocRecord] = field(default_factory=list)
    dead_letters: list[DeadLetter] = field(default_factory=list)
    embedded: int = 0  # vectors computed by the model in this batch
    cached: int = 0  # chunk vectors reused from the cache
    superseded: int = 0  # changes dropped because a newer version of the doc was in the batch
    metadata_only: int = 0  # records sent without vectors: the text was the one the regions hold
    healed: int = 0  # documents re-read from the source because a region asked (heal requests)


class ChangeProcessor:
    def __init__(
        self,
        settings: Settings,
        embedder: TextEmbedder,
        output: RecordOutput,
        clock: Callable[[], float] = time.time,
        source_rows: SourceRows | None = None,
        source_events: SourceEvents | None = None,
    ) -> None:
        self.spec = CaptureSpec.from_settings(settings)
        self.cdc_topic = settings.cdc_topic
        self.cms_topic = settings.cms_topic
        # Heal requests come from every region: the source region's own, and the copies of the
        # others' (mirror/policy.py), all on the source region's broker.
        self.heal_topics = frozenset(policy.inbound_topics(settings, settings.source_region, settings.heal_topic))
        self.source_rows = source_rows
        self.source_events = source_events
        self.chunk_size = settings.chunk_size
        self.chunk_overlap = settings.chunk_overlap
        self.embedder = embedder
        self.output = output
        self.clock = clock
        self.recent = RecentHashes(settings.recent_hashes_max)

    def parse(self, msg: RawMessage) -> DocumentChange:
        if msg.topic == self.cms_topic:
            return cms.parse(msg.key, msg.value, self.spec, msg.topic, msg.partition, msg.offset)
        return debezium.parse(msg.key, msg.value, self.spec, msg.topic, msg.partition, msg.offset)

    def _chunk(self, text: str) -> list[str]:
        return chunk_text(text, self.chunk_size, self.chunk_overlap)

    def _dead_letter(self, msg: RawMessage, exc: PoisonEvent, result: BatchResult) -> None:
        letter = DeadLetter(STAGE, exc.reason, exc.detail, msg.topic, msg.partition, msg.offset,
                            msg.key, msg.value, int(self.clock() * 1000))
        log.warning("dead-lettered %s[%d]@%d: %s", msg.topic, msg.partition, msg.offset, exc)
        result.dead_letters.append(letter)
        self.output.send_dead_letter(letter)

    def _heal(self, requests: Sequence[tuple[RawMessage, HealRequest]], result: BatchResult) -> list[DocumentChange]:
        """Changes carrying the whole state of every document a region asked for: the current
        row for a Debezium document, the original event again for a CMS document."""
        by_kind: dict[str, dict[str, HealRequest]] = {}
        where: dict[tuple[str, str], RawMessage] = {}
        for msg, req in requests:
            readable = (req.source_kind == "debezium" and self.source_rows is not None) or (
                req.source_kind == "cms" and self.source_events is not None and req.offset >= 0)
            if req.source_kind not in HEALABLE_SOURCES or not readable:
                self._dead_letter(msg, PoisonEvent(
                    "unhealable", f"{req.region} lacks {req.doc_id!r} (from {req.source_kind!r}) and that source "
                    "cannot be read again; reconcile the region"), result)
                continue
            by_kind.setdefault(req.source_kind, {})[req.doc_id] = req
            where[(req.source_kind, req.doc_id)] = msg
        out: list[DocumentChange] = []
        wanted = newest_requests(list(by_kind.get("debezium", {}).values()))
        if wanted:
            assert self.source_rows is not None
            # A failure to read the source raises: the batch is retried, the requests are not lost.
            rows = self.source_rows.fetch(list(wanted))
            for doc_id, req in wanted.items():
                row = rows.get(doc_id)
                msg = where[("debezium", doc_id)]
                if row is None:
                    # Deleted at the source since: its delete event reaches every region on its own.
                    log.info("heal for %s (asked by %s): the row is gone at the source", doc_id, req.region)
                    continue
                ref = SourceRef("debezium", msg.topic, msg.partition, msg.offset, lsn=req.version, op="heal")
                try:
                    out.append(healed_change(req, row, self.spec, ref))
                except PoisonEvent as exc:
                    self._dead_letter(msg, exc, result)
        wanted = newest_requests(list(by_kind.get("cms", {}).values()))
        if wanted:
            assert self.source_events is not None
            found = self.source_events.fetch([(r.topic, r.partition, r.offset) for r in wanted.values()])
            for doc_id, req in wanted.items():
                msg = where[("cms", doc_id)]
                event = found.get((req.topic, req.partition, req.offset))
                healed = None
                if event is not None:
                    try:
                        healed = healed_from_event(req, cms.parse(event[0], event[1], self.spec, req.topic,
                                                                  req.partition, req.offset))
                    except PoisonEvent:
                        healed = None
                if healed is None:
                    self._dead_letter(msg, PoisonEvent(
                        "unhealable", f"{req.region} lacks {doc_id!r} v{req.version}: the CMS event at "
                        f"{req.topic}[{req.partition}]@{req.offset} is gone or is not that version; republish "
                        "the document or reconcile the region"), result)
                    continue
                out.append(healed)
        result.healed = len(out)
        if out:
            log.info("healing %d documents regions lack: %s", len(out), [c.doc_id for c in out][:10])
        return out

    def process(self, messages: Sequence[RawMessage]) -> BatchResult:
        result = BatchResult()
        changes: list[DocumentChange] = []
        heal_requests: list[tuple[RawMessage, HealRequest]] = []
        for msg in messages:
            try:
                if msg.topic in self.heal_topics:
                    heal_requests.append((msg, HealRequest.from_bytes(msg.value)))
                else:
                    changes.append(self.parse(msg))
            except PoisonEvent as exc:
                self._dead_letter(msg, exc, result)
        if heal_requests:
            # First in the batch: a text-less change of the same version that follows is merged
            # with the healed text (newest_per_document), and a newer change still wins.
            changes = self._heal(heal_requests, result) + changes

        winners = newest_per_document(changes)
        result.superseded = len(changes) - len(winners)
        unchanged = {
            c.doc_id: digest for c in winners if (digest := unchanged_text(c, self.recent.get(c.doc_id))) is not None
        }
        result.metadata_only = len(unchanged)
        chunked = texts_to_embed(winners, self._chunk, unchanged)

        # One model call for the whole batch: the embedder is the pipeline's bottleneck and
        # batching is what keeps it busy. Identical chunk texts are embedded once.
        unique = list(dict.fromkeys(t for texts in chunked.values() for t in texts))
        vectors: dict[str, np.ndarray] = {}
        computed: dict[str, bool] = {}
        if unique:
            matrix, fresh = self.embedder.embed_texts(unique)
            for text, row, was_computed in zip(unique, matrix, fresh, strict=True):
                vectors[text] = row
                computed[text] = was_computed
            result.embedded = sum(fresh)
            result.cached = len(unique) - result.embedded

        now_ms = int(self.clock() * 1000)
        for change in winners:
            texts = chunked.get(change.doc_id)
            embedded = sum(1 for t in dict.fromkeys(texts) if computed.get(t)) if texts else 0
            record = to_record(change, texts, vectors, embedded, now_ms, unchanged.get(change.doc_id))
            result.records.append(record)
            self.output.send_record(record)
        self.output.flush()
        # Only what the broker acknowledged is "held by the regions" (a failed flush retries the
        # batch, whose records must then be full again).
        for record in result.records:
            self.recent.remember(record)
        return result
