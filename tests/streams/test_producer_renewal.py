"""A producer whose sends were not acknowledged is replaced by a new one (a broker that lost its
state no longer knows the old producer's id: librdkafka would retry with it forever). Real
librdkafka producers against a port nobody listens on: nothing is ever acknowledged."""

from __future__ import annotations

import random

import pytest

from dialog.errors import DeliveryError
from dialog.kafka_io import KafkaPublisher
from dialog.loadgen import conversation
from regionsync.settings import Settings
from stack.procs import free_port
from streams.errors import StreamsError
from streams.events import DocRecord, RecordOp, SourceRef
from streams.output import KafkaRecordOutput
from streams.publisher import CmsPublisher


@pytest.fixture()
def nowhere() -> Settings:
    return Settings(kafka_bootstrap=f"127.0.0.1:{free_port()}")


def test_the_change_agents_output_gets_a_new_producer_after_a_failed_flush(nowhere: Settings) -> None:
    out = KafkaRecordOutput(nowhere, flush_timeout=0.5)
    first = out.producer
    out.send_record(DocRecord("d", None, RecordOp.DELETE, SourceRef("test", "t", 0, 0)))
    with pytest.raises(StreamsError, match="unacknowledged"):
        out.flush()
    assert out.producer is not first


def test_an_injected_producer_is_kept(nowhere: Settings) -> None:
    class Stuck:
        def produce(self, *a: object, **k: object) -> None: ...
        def poll(self, t: float) -> int:
            return 0
        def flush(self, t: float) -> int:
            return 1

    stuck = Stuck()
    out = KafkaRecordOutput(nowhere, producer=stuck)  # type: ignore[arg-type]
    with pytest.raises(StreamsError):
        out.flush()
    assert out.producer is stuck


def test_the_dialog_publisher_and_the_cms_publisher_renew_theirs(nowhere: Settings) -> None:
    pub = KafkaPublisher(nowhere)
    first = pub._producer
    with pytest.raises(DeliveryError):
        pub.publish(conversation("s", random.Random(1), turns=1)[:1], timeout=0.5)
    assert pub._producer is not first
    cms = CmsPublisher(nowhere)
    before = cms.producer
    with pytest.raises(StreamsError):
        cms.publish([{"doc_id": "a", "version": 1, "op": "delete"}], timeout=0.5)
    assert cms.producer is not before


class _FatalOnFlush:
    """A producer whose flush meets a fatal error, raised as confluent-kafka raises it: the
    KafkaException itself, or a SystemError caused by it (a delivery callback ran while it was
    pending; seen after the broker lost its state: out-of-order sequence number)."""

    def __init__(self, wrapped: bool) -> None:
        self.wrapped = wrapped

    def produce(self, *a: object, **k: object) -> None: ...

    def poll(self, t: float) -> int:
        return 0

    def purge(self, **k: object) -> None: ...

    def flush(self, t: float) -> int:
        from confluent_kafka import KafkaError, KafkaException

        fatal = KafkaException(KafkaError(KafkaError._FATAL, "out of order sequence number", fatal=True))
        if not self.wrapped:
            raise fatal
        raise SystemError("<built-in method __format__ of KafkaError> returned a result with an exception set") from fatal


@pytest.mark.parametrize("wrapped", [False, True])
def test_the_cms_publisher_turns_a_fatal_producer_error_into_a_publish_error_and_renews(
    nowhere: Settings, wrapped: bool
) -> None:
    from streams.publisher import PublishError

    cms = CmsPublisher(nowhere)
    cms.producer = _FatalOnFlush(wrapped)  # type: ignore[assignment]
    with pytest.raises(PublishError, match="1 of 1 events not acknowledged: the producer failed"):
        cms.publish([{"doc_id": "a", "version": 1, "op": "delete"}], timeout=0.5)
    assert not isinstance(cms.producer, _FatalOnFlush)


def test_a_system_error_without_a_kafka_cause_is_not_swallowed(nowhere: Settings) -> None:
    class Broken(_FatalOnFlush):
        def flush(self, t: float) -> int:
            raise SystemError("something else")

    cms = CmsPublisher(nowhere)
    cms.producer = Broken(False)  # type: ignore[assignment]
    with pytest.raises(SystemError, match="something else"):
        cms.publish([{"doc_id": "a", "version": 1, "op": "delete"}], timeout=0.5)
