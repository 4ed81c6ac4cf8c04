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

from regionsync.settings import Settings
from streams import cms, debezium
from streams.capture import CaptureSpec
from streams.chunking import chunk_text
from streams.deadletter import DeadLetter
from streams.decide import newest_per_document, texts_to_embed, to_record
from streams.errors import PoisonEvent
from streams.events import DocRecord, DocumentChange, SourceRef
from streams.heal import HEALABLE_SOURCES, HealRequest, SourceRows, healed_change, newest_requests

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
    healed: int = 0  # documents re-read from the source because a region asked (heal requests)


class ChangeProcessor:
    def __init__(
        self,
        settings: Settings,
        embedder: TextEmbedder,
        output: RecordOutput,
        clock: Callable[[], float] = time.time,
        source_rows: SourceRows | None = None,
    ) -> None:
        self.spec = CaptureSpec.from_settings(settings)
        self.cdc_topic = settings.cdc_topic
        self.cms_topic = settings.cms_topic
        self.heal_topic = settings.heal_topic
        self.source_rows = source_rows
        self.chunk_size = settings.chunk_size
        self.chunk_overlap = settings.chunk_overlap
        self.embedder = embedder
        self.output = output
        self.clock = clock

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
        """Changes carrying the current source row of every document a region asked for."""
        healable: list[HealRequest] = []
        where: dict[str, RawMessage] = {}
        for msg, req in requests:
            if req.source_kind not in HEALABLE_SOURCES or self.source_rows is None:
                self._dead_letter(msg, PoisonEvent(
                    "unhealable", f"{req.region} lacks {req.doc_id!r} (from {req.source_kind!r}) and that source "
                    "cannot be read by key; reconcile the region"), result)
                continue
            healable.append(req)
            where[req.doc_id] = msg
        wanted = newest_requests(healable)
        if not wanted:
            return []
        assert self.source_rows is not None
        # A failure to read the source raises: the batch is retried, the requests are not lost.
        rows = self.source_rows.fetch(list(wanted))
        out: list[DocumentChange] = []
        for doc_id, req in wanted.items():
            row = rows.get(doc_id)
            if row is None:
                # Deleted at the source since: its delete event reaches every region on its own.
                log.info("heal for %s (asked by %s): the row is gone at the source", doc_id, req.region)
                continue
            msg = where[doc_id]
            ref = SourceRef("debezium", msg.topic, msg.partition, msg.offset, lsn=req.version, op="heal")
            try:
                out.append(healed_change(req, row, self.spec, ref))
            except PoisonEvent as exc:
                self._dead_letter(msg, exc, result)
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
                if msg.topic == self.heal_topic:
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
        chunked = texts_to_embed(winners, self._chunk)

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
            record = to_record(change, texts, vectors, embedded, now_ms)
            result.records.append(record)
            self.output.send_record(record)
        self.output.flush()
        return result
