"""All of dialog/'s Kafka I/O: client configs, the topic, the event publisher, the dead letters.

The publisher is what makes "the customer was told" durable: :meth:`KafkaPublisher.publish`
returns only when the broker acknowledged every event with ``acks=all`` (idempotent producer,
so a retried send is not duplicated), and raises :class:`DeliveryError` otherwise. A reply whose
events did not all get acknowledged must not be shown to the customer.
"""

from __future__ import annotations

import base64
import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import orjson
from confluent_kafka import Consumer, KafkaError, KafkaException, Message
from confluent_kafka.admin import NewTopic

from dialog import sealing
from dialog.errors import DeliveryError, DialogError
from dialog.events import DialogEvent, SealingKey, encode, key_of
from dialog.keys import KeyRing
from regionsync.kafka import ReadTimeout, new_admin, new_producer, read_to_end, renewed
from regionsync.settings import Settings

log = logging.getLogger(__name__)


def producer_config(settings: Settings, **overrides: Any) -> dict[str, Any]:
    return settings.kafka().producer({
        # Same partition for a key as Kafka's Java clients (librdkafka's default hashes with CRC32).
        "partitioner": "murmur2_random",
        # A turn's events are produced in one loop, then flushed: a few milliseconds of linger send
        # them as one batch, which a replicator fetches whole. With 0 the first event left alone,
        # and a region lost between the two requests' fetches left the other region half a turn.
        "linger.ms": 5,
        "message.timeout.ms": 30000,
        **overrides,
    })


def consumer_config(settings: Settings, group: str) -> dict[str, Any]:
    # Partitions are assigned by hand and positions live in the state store, so the group id is
    # only a label: nothing is ever committed to the broker.
    return settings.kafka().reader(group)


def ensure_topic(settings: Settings, topic: str, partitions: int | None = None) -> None:
    admin = new_admin(settings.kafka().client())
    existing = admin.list_topics(timeout=10).topics
    if topic in existing:
        return
    futures = admin.create_topics([NewTopic(topic, partitions or settings.topic_partitions, 1)])
    for name, future in futures.items():
        try:
            future.result(15)
        except KafkaException as exc:
            if exc.args[0].code() != KafkaError.TOPIC_ALREADY_EXISTS:
                raise DialogError(f"cannot create topic {name}: {exc}") from exc


def partitions_of(consumer: Consumer, topic: str, timeout: float = 10.0) -> list[int]:
    deadline = time.monotonic() + timeout
    while True:
        meta = consumer.list_topics(topic, timeout=timeout).topics.get(topic)
        if meta is not None and meta.error is None and meta.partitions:
            return sorted(meta.partitions)
        if time.monotonic() > deadline:
            raise DialogError(f"topic {topic} has no partitions (does it exist?)")
        time.sleep(0.1)


def where(msg: Message) -> tuple[int, int]:
    """(partition, offset) of a consumed or delivered record (never None for those)."""
    partition, offset = msg.partition(), msg.offset()
    assert partition is not None and offset is not None
    return partition, offset


@dataclass(frozen=True)
class Ack:
    event_id: str
    session_id: str
    seq: int
    partition: int
    offset: int


class KafkaPublisher:
    """Publishes session events to the topic, keyed by session id."""

    def __init__(self, settings: Settings, topic: str | None = None, config: dict[str, Any] | None = None,
                 keys: KeyRing | None = None, region: str = "") -> None:
        """``config`` overrides producer settings (e.g. ``linger.ms`` for bulk loads). With
        ``keys`` (the key ring of ``region``, the writing region) every event's personal fields
        are sealed with its session's key, made and committed before the session's first event is
        sent (dialog/sealing.py)."""
        self.topic = topic or settings.dialog_topic
        self._keys = keys
        self._region = region
        self._config = producer_config(settings, **(config or {}))
        self._producer = new_producer(self._config)

    def publish(self, events: Sequence[DialogEvent], timeout: float = 30.0) -> list[Ack]:
        """Send and wait for every acknowledgement; raise :class:`DeliveryError` if any failed."""
        acks: list[Ack] = []
        errors: list[str] = []
        secret = self._session_keys(events)

        def on_delivery(event: DialogEvent) -> Callable[[KafkaError | None, Message], None]:
            def delivered(err: KafkaError | None, msg: Message) -> None:
                if err is not None:
                    errors.append(f"{event.session_id}#{event.seq}: {err}")
                else:
                    acks.append(Ack(event.event_id, event.session_id, event.seq, *where(msg)))

            return delivered

        for event in events:
            while True:
                try:
                    self._producer.produce(
                        self.topic, value=encode(event, secret.get(event.session_id)), key=key_of(event),
                        on_delivery=on_delivery(event),
                    )
                    break
                except BufferError:  # local queue full: let deliveries drain it
                    self._producer.poll(0.05)
        remaining = self._producer.flush(timeout)
        if errors or remaining or len(acks) != len(events):
            self._producer = renewed(self._producer, self._config)
            raise DeliveryError(
                f"{len(events) - len(acks)} of {len(events)} events not acknowledged"
                + (f": {errors[0]}" if errors else f" within {timeout:.0f}s")
            )
        return acks

    def _session_keys(self, events: Sequence[DialogEvent]) -> dict[str, SealingKey]:
        """The key of every session these events seal something of (none for an erasure alone)."""
        if self._keys is None:
            return {}
        sessions = {e.session_id for e in events if e.TYPE in sealing.SEALED_FIELDS}
        return {sid: self._keys.create(sid, self._region) for sid in sorted(sessions)}

    def close(self) -> None:
        self._producer.flush(10)


def dead_letter(reason: str, detail: str, msg: Message, stage: str = "dialog") -> bytes:
    """The project-wide dead-letter record (JSON; the original bytes base64 so nothing is lost)."""
    key, value = msg.key(), msg.value()
    return orjson.dumps(
        {
            "reason": reason,
            "detail": detail,
            "topic": msg.topic(),
            "partition": msg.partition(),
            "offset": msg.offset(),
            "key_b64": None if key is None else base64.b64encode(key).decode("ascii"),
            "value_b64": None if value is None else base64.b64encode(value).decode("ascii"),
            "stage": stage,
        }
    )


class DeadLetters:
    """Producer of the dead-letter topic. :meth:`send` returns once the broker has the records:
    the worker calls it before committing the batch's offsets, so a dead letter is never lost
    (it may be written twice if the worker dies between the two)."""

    def __init__(self, settings: Settings, topic: str | None = None) -> None:
        self.topic = topic or settings.dlq_topic
        self._config = producer_config(settings, **{"linger.ms": 5})
        self._producer = new_producer(self._config)

    def send(self, records: Sequence[tuple[bytes | None, bytes]], timeout: float = 30.0) -> None:
        errors: list[str] = []

        def delivered(err: KafkaError | None, _msg: Message) -> None:
            if err is not None:
                errors.append(str(err))

        for key, value in records:
            self._producer.produce(self.topic, value=value, key=key, on_delivery=delivered)
        if self._producer.flush(timeout) or errors:
            self._producer = renewed(self._producer, self._config)
            raise DeliveryError(f"dead letters not acknowledged: {errors[:1] or 'timeout'}")


def read_topic(
    settings: Settings, topic: str, end_offsets: dict[int, int], timeout: float = 60.0
) -> list[Message]:
    """Every record of ``topic`` below ``end_offsets`` (exact ends, e.g. from producer acks: the
    broker's high-water mark is not trusted, see regionsync/kafka.py), in partition order."""
    ends = {(topic, p): end for p, end in end_offsets.items()}
    try:
        msgs = list(read_to_end(settings.kafka(), ends, timeout=timeout))
    except ReadTimeout as exc:
        raise DialogError(f"reading {topic}: {exc}") from exc
    return sorted(msgs, key=where)
