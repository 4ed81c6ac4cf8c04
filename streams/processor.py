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
from streams.events import DocRecord, DocumentChange

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


class ChangeProcessor:
    def __init__(
        self,
        settings: Settings,
        embedder: TextEmbedder,
        output: RecordOutput,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.spec = CaptureSpec.from_settings(settings)
        self.cdc_topic = settings.cdc_topic
        self.cms_topic = settings.cms_topic
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

    def process(self, messages: Sequence[RawMessage]) -> BatchResult:
        result = BatchResult()
        changes: list[DocumentChange] = []
        for msg in messages:
            try:
                changes.append(self.parse(msg))
            except PoisonEvent as exc:
                letter = DeadLetter(STAGE, exc.reason, exc.detail, msg.topic, msg.partition, msg.offset,
                                    msg.key, msg.value, int(self.clock() * 1000))
                log.warning("dead-lettered %s[%d]@%d: %s", msg.topic, msg.partition, msg.offset, exc)
                result.dead_letters.append(letter)
                self.output.send_dead_letter(letter)

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
