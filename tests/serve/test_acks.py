"""Mirrored acknowledgements (serve/acks.py) on the embedded stack: a turn's events are confirmed
only once the other region's broker holds them; a region that stops confirming (its replicator
paused here) leaves the in-sync set after the timeout, and with two regions the turn is then
refused (after the append) and so is every turn after it (before publishing), until the region
caught up."""

from __future__ import annotations

import secrets
import time

import pytest

from dialog.events import UserUtterance
from dialog.kafka_io import KafkaPublisher
from mirror.checkpoints import set_paused
from regionsync.pgdb import region_dsn
from regionsync.settings import Settings
from serve.acks import MirroredAcks
from serve.errors import NotInSync

pytestmark = pytest.mark.integration


def _event(session: str, seq: int) -> UserUtterance:
    return UserUtterance(session_id=session, seq=seq, event_id=secrets.token_hex(8), ts_ms=int(time.time() * 1000),
                         origin="east", epoch=0, text=f"mirrored {seq}")


def test_a_turn_is_confirmed_once_the_other_region_holds_it_and_refused_while_it_is_out_of_sync(
    settings: Settings,
) -> None:
    east = settings.for_region("east").model_copy(update={"mirrored_ack_timeout_s": 2.0})
    publisher = KafkaPublisher(east)
    acks = MirroredAcks(east, "east")
    session = f"mirrored-{secrets.token_hex(4)}"
    try:
        written = publisher.publish([_event(session, 1)])
        waited = acks.wait((a.partition, a.offset) for a in written)
        partition, offset = written[0].partition, written[0].offset
        assert (acks.copied("north") or {}).get(partition, 0) > offset  # north's broker holds it: it was confirmed
        assert waited < 2.0 and acks.out_of_sync == {}

        set_paused(region_dsn(settings, "north"), "east", True, "test: mirrored acknowledgements")
        time.sleep(1.5)
        written = publisher.publish([_event(session, 2)])
        started = time.monotonic()
        with pytest.raises(NotInSync, match="not acknowledged"):
            acks.wait((a.partition, a.offset) for a in written)
        assert time.monotonic() - started >= 2.0  # it waited the whole timeout for north
        assert list(acks.out_of_sync) == ["north"]
        assert (acks.copied("north") or {}).get(partition, 0) <= written[0].offset  # north does not hold it
        with pytest.raises(NotInSync, match="refuses turns"):
            acks.admit()  # the next turn is refused before anything is published
    finally:
        set_paused(region_dsn(settings, "north"), "east", False)
    deadline = time.monotonic() + 60
    while acks.out_of_sync and time.monotonic() < deadline:  # caught up: back in the set
        time.sleep(1.1)
        try:
            acks.admit()
        except NotInSync:
            pass
    assert acks.out_of_sync == {}
    written = publisher.publish([_event(session, 3)])
    assert acks.wait((a.partition, a.offset) for a in written) < 2.0
    acks.close()
    publisher.close()
