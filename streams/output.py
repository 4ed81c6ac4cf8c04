"""Kafka output of the change agent: doc records to the chunks topic, poison to the dead-letter topic."""

from __future__ import annotations

from confluent_kafka import KafkaError, Message, Producer

from regionsync.kafka import discard, new_producer
from regionsync.settings import Settings
from streams.deadletter import DeadLetter
from streams.errors import StreamsError
from streams.events import DocRecord


class OutputError(StreamsError):
    """Not every record was acknowledged by the broker; the batch must be retried."""


def make_producer(settings: Settings) -> Producer:
    # Idempotent produce works on tansu and on Kafka: a retried send is not duplicated.
    return new_producer(settings.kafka().producer({"linger.ms": 5, "compression.type": "lz4"}))


class KafkaRecordOutput:
    def __init__(self, settings: Settings, producer: Producer | None = None, flush_timeout: float = 60.0) -> None:
        self.chunks_topic = settings.chunks_topic
        self.dlq_topic = settings.dlq_topic
        self._settings = settings if producer is None else None  # an injected producer is kept
        self.producer = producer or make_producer(settings)
        self.flush_timeout = flush_timeout
        self._errors: list[str] = []

    def _on_delivery(self, err: KafkaError | None, msg: Message) -> None:
        if err is not None:
            self._errors.append(f"{msg.topic()} key={msg.key()!r}: {err}")

    def send_record(self, record: DocRecord) -> None:
        self.producer.produce(
            self.chunks_topic, key=record.doc_id.encode("utf-8"), value=record.to_bytes(), on_delivery=self._on_delivery
        )
        self.producer.poll(0)

    def send_dead_letter(self, letter: DeadLetter) -> None:
        self.producer.produce(
            self.dlq_topic,
            key=letter.key,
            value=letter.to_bytes(),
            headers=list(letter.headers()),
            on_delivery=self._on_delivery,
        )
        self.producer.poll(0)

    def flush(self) -> None:
        remaining = self.producer.flush(self.flush_timeout)
        errors, self._errors = self._errors, []
        if remaining or errors:
            if self._settings is not None:
                discard(self.producer)
                self.producer = make_producer(self._settings)
                self._errors = []  # the purged records' reports: the retried batch sends them again
            raise OutputError(f"{remaining} records unacknowledged, {len(errors)} failed: {'; '.join(errors[:3])}")
