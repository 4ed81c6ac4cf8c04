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
from regionsync.stack.procs import free_port
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
