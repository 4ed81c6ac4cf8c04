"""Heal requests: a region asks the change agent for a document's whole state.

A meta record (the text is unknown: an unchanged TOASTed column under REPLICA IDENTITY DEFAULT
that Debezium could not re-select) can only re-label chunks a region already holds. A region that
does not hold the document (it lost its index, a record never reached it, the insert that carried
the text was superseded...) cannot index it from a meta record, and must not merely log that.
Its indexer sends a :class:`HealRequest` to the heal topic; the change agent answers by reading the
document's current row from the source and emitting a full record (text and vectors) on the
chunks topic. Every region applies that record through its version guard, so a region that holds
the version already skips it and only the one that lacked the document changes.

The healed change carries the version the region asked about (the meta record's version), not a
newer one read from the source: a change committed around the read keeps a higher version and
still wins when it arrives, so a heal can never hide a later edit.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

import orjson
import psycopg
from psycopg import sql

from regionsync.kafka import new_consumer
from regionsync.settings import Settings
from streams.capture import CaptureSpec
from streams.debezium import decode_json
from streams.errors import PoisonEvent
from streams.events import DocumentChange, SourceRef

HEAL_SCHEMA = 1
# Debezium's source (the CMS table) is read by key: the document's current row. The CMS
# producers' topic has no lookup by key, but a CMS event always carries its whole text, so a
# meta record made from one (title/tags changed, text as before) is healed by reading that very
# event again at its coordinates.
HEALABLE_SOURCES = ("debezium", "cms")


@dataclass(frozen=True)
class HealRequest:
    """``region`` lacks ``doc_id`` (or holds other text) and got a meta record for it at
    ``version`` from ``source_kind``, made from the source event at ``topic``/``partition``/``offset``."""

    doc_id: str
    version: int
    source_kind: str
    region: str
    requested_ms: int = 0
    topic: str = ""
    partition: int = 0
    offset: int = -1

    def to_bytes(self) -> bytes:
        return orjson.dumps(
            {
                "schema": HEAL_SCHEMA,
                "doc_id": self.doc_id,
                "version": self.version,
                "source_kind": self.source_kind,
                "region": self.region,
                "requested_ms": self.requested_ms,
                "source": {"topic": self.topic, "partition": self.partition, "offset": self.offset},
            }
        )

    @classmethod
    def from_bytes(cls, raw: bytes | None) -> HealRequest:
        """Decode; raises :class:`PoisonEvent` for anything that is not a heal request."""
        if raw is None:
            raise PoisonEvent("wrong_envelope", "heal request without a value")
        data = decode_json(raw, "value")
        if not isinstance(data, dict) or data.get("schema") != HEAL_SCHEMA:
            raise PoisonEvent("wrong_envelope", "not a regionsync heal request")
        doc_id, version = data.get("doc_id"), data.get("version")
        if not isinstance(doc_id, str) or not doc_id:
            raise PoisonEvent("missing_key", "heal request without a doc_id")
        if not isinstance(version, int) or isinstance(version, bool):
            raise PoisonEvent("bad_field", f"heal request version must be an integer, got {version!r}")
        requested = data.get("requested_ms")
        raw_source = data.get("source")
        source: dict[str, Any] = raw_source if isinstance(raw_source, dict) else {}
        partition, offset = source.get("partition"), source.get("offset")
        return cls(
            doc_id=doc_id,
            version=version,
            source_kind=str(data.get("source_kind") or ""),
            region=str(data.get("region") or ""),
            requested_ms=requested if isinstance(requested, int) else 0,
            topic=str(source.get("topic") or ""),
            partition=partition if isinstance(partition, int) else 0,
            offset=offset if isinstance(offset, int) else -1,
        )


class SourceRows(Protocol):
    """The source of truth, read by key. ``fetch`` returns the current row of each id that exists
    (column -> value, the captured columns); ids that are gone are absent. A failure raises: the
    agent then retries its batch instead of dropping the requests."""

    def fetch(self, doc_ids: Sequence[str]) -> dict[str, dict[str, Any]]: ...


class PostgresSourceRows:
    """The CMS table in Postgres, the same one Debezium captures."""

    def __init__(self, settings: Settings, spec: CaptureSpec | None = None) -> None:
        self._dsn = settings.pg_dsn()
        self._table = settings.capture_table
        self._spec = spec or CaptureSpec.from_settings(settings)
        self._conn: psycopg.Connection[Any] | None = None

    def _columns(self) -> list[str]:
        s = self._spec
        wanted = [s.key_column, s.title_column, *s.text_columns, s.tags_column, s.status_column]
        return list(dict.fromkeys(wanted))

    def fetch(self, doc_ids: Sequence[str]) -> dict[str, dict[str, Any]]:
        if not doc_ids:
            return {}
        columns = self._columns()
        query = sql.SQL("SELECT {cols} FROM {table} WHERE {key}::text = ANY(%s)").format(
            cols=sql.SQL(", ").join(sql.Identifier(c) for c in columns),
            table=sql.Identifier(*self._table.split(".")),
            key=sql.Identifier(self._spec.key_column),
        )
        if self._conn is None or self._conn.closed:
            self._conn = psycopg.connect(self._dsn, autocommit=True)
        try:
            rows = self._conn.execute(query, (list(doc_ids),)).fetchall()
        except psycopg.OperationalError:
            self.close()  # reconnect on the retry
            raise
        return {str(row[0]): dict(zip(columns, row, strict=True)) for row in rows}

    def close(self) -> None:
        conn, self._conn = self._conn, None
        if conn is not None:
            conn.close()


class SourceEvents(Protocol):
    """Source events read again by their coordinates: (key, value) of each that is still there
    (retention or compaction may have removed it). A failure raises (the batch is retried)."""

    def fetch(self, coordinates: Sequence[tuple[str, int, int]]) -> dict[tuple[str, int, int], tuple[bytes | None, bytes | None]]: ...


class KafkaSourceEvents:
    """Reads single events of the CMS producers' topic again, by topic, partition and offset.

    Whether an offset is still on the log is judged against the log's start (ListOffsets
    earliest) and its end as the fetch path tells it (:func:`regionsync.kafka.fetch_ends`): tansu's
    ListOffsets(latest) is below the real end on its S3 engine, and an event past it would be
    judged never written (seen: four of a five-record batch, the heal dead-lettered as unhealable)."""

    def __init__(self, settings: Settings, timeout_s: float = 10.0) -> None:
        self._settings = settings
        self._timeout_s = timeout_s

    def fetch(self, coordinates: Sequence[tuple[str, int, int]]) -> dict[tuple[str, int, int], tuple[bytes | None, bytes | None]]:
        from confluent_kafka import KafkaException, TopicPartition

        from regionsync.kafka import EndsUnknown, fetch_ends

        out: dict[tuple[str, int, int], tuple[bytes | None, bytes | None]] = {}
        if not coordinates:
            return out
        tps = sorted({(topic, partition) for topic, partition, _offset in coordinates})
        try:
            ends = fetch_ends(self._settings.kafka(), tps, self._timeout_s)
        except EndsUnknown as exc:  # a failure raises: the batch is retried
            raise KafkaException(f"the CMS topic's ends are unknown: {exc}") from exc
        consumer = new_consumer(self._settings.kafka().client({
            "group.id": "regionsync-heal-reader",  # never subscribes nor commits: assign() only
            "enable.auto.commit": False,
        }))
        try:
            for topic, partition, offset in coordinates:
                low, _high = consumer.get_watermark_offsets(TopicPartition(topic, partition), timeout=self._timeout_s)
                if not low <= offset < ends[(topic, partition)]:
                    continue  # gone (retention) or never there
                consumer.assign([TopicPartition(topic, partition, offset)])
                msgs = consumer.consume(1, timeout=self._timeout_s)
                if not msgs:
                    raise KafkaException(f"no event read at {topic}[{partition}]@{offset} within {self._timeout_s}s")
                msg = msgs[0]
                if msg.error() is not None:
                    raise KafkaException(msg.error())
                if msg.offset() == offset:  # a compacted topic may skip it: then it is gone
                    out[(topic, partition, offset)] = (msg.key(), msg.value())
        finally:
            consumer.close()
        return out


def newest_requests(requests: Sequence[HealRequest]) -> dict[str, HealRequest]:
    """One request per document, the highest version (several regions may ask at once)."""
    out: dict[str, HealRequest] = {}
    for req in requests:
        if req.doc_id not in out or req.version > out[req.doc_id].version:
            out[req.doc_id] = req
    return out


def healed_change(
    request: HealRequest, row: Mapping[str, Any], spec: CaptureSpec, ref: SourceRef
) -> DocumentChange:
    """The change that gives every region ``row``'s state at the requested version (pure)."""
    return spec.change_from_row(request.doc_id, request.version, row, ref)


def healed_from_event(request: HealRequest, change: DocumentChange) -> DocumentChange | None:
    """The source event, parsed again, if it is the whole state the region asked about: same
    document, same version, text known. Anything else cannot heal (None)."""
    if change.doc_id != request.doc_id or change.version != request.version or change.text is None:
        return None
    return dataclasses.replace(change, source=dataclasses.replace(change.source, op="heal"), previous_hash=None)
