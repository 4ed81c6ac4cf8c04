"""What a region service publishes: a turn's events behind the fence (and the mirrored
acknowledgements), and its promotions onto its control topic."""

from __future__ import annotations

from collections.abc import Sequence

from confluent_kafka import KafkaError, Message

from dialog.errors import DeliveryError
from dialog.events import DialogEvent
from dialog.fence import Promotion
from dialog.kafka_io import Ack, KafkaPublisher, producer_config
from regionsync.kafka import new_producer, renewed
from regionsync.settings import Settings
from serve.acks import MirroredAcks
from serve.roles import RegionRole


class FencedPublisher:
    """Publishes a turn's events only while this region's writer session still holds the
    active-region row (a promotion being recorded may have fenced it while the turn was computed),
    and, in the ``mirrored`` mode, only while enough regions are in sync, returning once they hold
    them (serve/acks.py)."""

    def __init__(self, inner: KafkaPublisher, role: RegionRole, acks: MirroredAcks | None) -> None:
        self._inner = inner
        self._role = role
        self._acks = acks
        self.last_mirror_wait_s: float | None = None

    def publish(self, events: Sequence[DialogEvent]) -> list[Ack]:
        self._role.check_writer()
        if self._acks is not None:
            self._acks.admit()
        acks = self._inner.publish(events)
        if self._acks is not None:
            self.last_mirror_wait_s = self._acks.wait((a.partition, a.offset) for a in acks)
        return acks


class ControlPublisher:
    """This region's promotions onto its control topic (acks=all), whence the replicators carry
    them to every other region."""

    def __init__(self, settings: Settings) -> None:
        self.topic = settings.control_topic
        self._config = producer_config(settings)
        self._producer = new_producer(self._config)

    def publish(self, promo: Promotion, timeout: float = 10.0) -> None:
        errors: list[str] = []

        def delivered(err: KafkaError | None, _msg: Message) -> None:
            if err is not None:
                errors.append(str(err))

        self._producer.produce(self.topic, key=promo.key(), value=promo.to_json(), partition=0, on_delivery=delivered)
        if self._producer.flush(timeout) or errors:
            self._producer = renewed(self._producer, self._config)
            raise DeliveryError(f"promotion to epoch {promo.epoch} not acknowledged: {errors[:1] or 'timeout'}")

    def close(self) -> None:
        self._producer.flush(5)
