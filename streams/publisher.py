"""Producer API for CMS systems: ``CmsPublisher(settings).publish(events)``."""

from __future__ import annotations

import logging
from collections.abc import Iterable
from typing import IO, Any

from confluent_kafka import KafkaError, KafkaException, Message, Producer

from regionsync.kafka import discard, new_producer
from regionsync.settings import Settings
from streams.capture import CaptureSpec
from streams.cms import CmsEvent, read_jsonl, validate
from streams.errors import StreamsError

log = logging.getLogger(__name__)


class PublishError(StreamsError):
    """The broker did not acknowledge every event."""


class CmsPublisher:
    """Validates and publishes CMS document events; :meth:`publish` returns once all are acknowledged."""

    def __init__(self, settings: Settings, producer: Producer | None = None) -> None:
        self.settings = settings.source()  # the CMS topic is the source region's
        self.spec = CaptureSpec.from_settings(settings)
        self._own = producer is None
        self.producer = producer or self._new_producer()

    def _new_producer(self) -> Producer:
        return new_producer(self.settings.kafka().producer({"linger.ms": 5}))

    def publish(self, events: Iterable[CmsEvent | dict[str, Any]], timeout: float = 30.0) -> int:
        checked = [e if isinstance(e, CmsEvent) else validate(e, self.spec) for e in events]
        failures: list[str] = []

        def on_delivery(err: KafkaError | None, msg: Message) -> None:
            if err is not None:
                failures.append(f"{msg.key()!r}: {err}")

        try:
            for event in checked:
                self.producer.produce(
                    self.settings.cms_topic, key=event.doc_id.encode("utf-8"), value=event.to_bytes(),
                    on_delivery=on_delivery,
                )
                self.producer.poll(0)
            remaining = self.producer.flush(timeout)
        except (KafkaException, SystemError) as exc:
            # A fatal producer error comes out of poll/flush as an exception (seen after the broker
            # lost its state: "out of order sequence number", the idempotent producer's sequence
            # desynchronised); confluent-kafka raises it as a SystemError caused by the
            # KafkaException when a delivery callback runs while it is pending. Nothing is known
            # to be acknowledged: the same PublishError as an unacknowledged send, with a new producer.
            cause = exc if isinstance(exc, KafkaException) else exc.__cause__
            if not isinstance(cause, KafkaException):
                raise
            failures.append(f"the producer failed: {cause.args[0] if cause.args else cause}")
            remaining = len(checked)
        if remaining or failures:
            if self._own:  # a broker that lost its state no longer knows this producer: a new one
                discard(self.producer)
                self.producer = self._new_producer()
            raise PublishError(
                f"{min(len(checked), len(failures) + remaining)} of {len(checked)} events not acknowledged: "
                f"{'; '.join(failures[:5])}"
            )
        return len(checked)


def publish_jsonl(settings: Settings, stream: IO[str]) -> int:
    """What ``regionsync publish`` does: validate every line (raising :class:`CmsEventError`
    listing each bad one, before anything is sent), then publish all and wait for the acks."""
    events = list(read_jsonl(stream, CaptureSpec.from_settings(settings)))
    return CmsPublisher(settings).publish(events)
