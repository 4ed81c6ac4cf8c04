"""The dialog manager and the two worked example handlers (in memory: publisher and store fakes)."""

from __future__ import annotations

import itertools
from collections.abc import Sequence
from typing import Any

import pytest

from dialog.errors import DeliveryError, DialogError
from dialog.events import BotReplied, DialogEvent, SessionStarted, SlotFilled, ToolCalled, UserUtterance
from dialog.handlers import BlockCardHandler, InquireOrderHandler
from dialog.manager import DialogManager, MemoryPublisher
from dialog.memory_store import MemoryStore
from dialog.reducer import fold
from dialog.store import Stats

from .helpers import Tools


def manager(publisher: MemoryPublisher, store: MemoryStore, tools: Tools, region: str = "east") -> DialogManager:
    clock = itertools.count(1_700_000_000_000, 1000)
    dm = DialogManager(publisher, sessions=store, region=region, clock=lambda: next(clock))
    dm.register_handler("inquire_order", InquireOrderHandler(tools.lookup))
    dm.register_handler("block_card", BlockCardHandler(tools.block))
    return dm


def project(store: MemoryStore, events: Sequence[DialogEvent]) -> None:
    """What the region's worker does with the log (minus Kafka): fold into the store."""
    states = fold(events, {s.session_id: s for s in store.all_states()})
    store.replace_all(states.values(), {}, Stats(applied=len(events)))


@pytest.fixture
def tools() -> Tools:
    return Tools()


def test_inquire_order_asks_for_the_number_then_answers_with_sources(tools: Tools) -> None:
    log, store = MemoryPublisher(), MemoryStore("t")
    dm = manager(log, store, tools)
    first = dm.process({"text": "where is my order?", "intent": "inquire_order", "session_id": "s1"})
    assert "order number" in first.text and first.sources == ()
    second = dm.process({"text": "it's A-1", "slots": {"order_id": "A-1"}, "session_id": "s1"})
    assert second.text == "Order A-1 is shipped, expected on 2026-12-01."
    assert second.sources == ("orders/A-1",) and second.confirmed == ("order A-1 is shipped",)

    assert [type(e) for e in log.events[-4:]] == [UserUtterance, SlotFilled, ToolCalled, BotReplied]
    assert [e.seq for e in log.events] == list(range(1, len(log.events) + 1))
    assert isinstance(log.events[0], SessionStarted) and {e.origin for e in log.events} == {"east"}
    # The manager's view is exactly what any region folds from the log.
    assert fold(log.events)["s1"] == dm.state("s1")
    assert second.last_seq == len(log.events)


def test_inquire_order_unknown_number_records_the_error_and_forgets_the_slot(tools: Tools) -> None:
    log = MemoryPublisher()
    dm = manager(log, MemoryStore("t"), tools)
    reply = dm.process({"text": "order Z-9", "intent": "inquire_order", "slots": {"order_id": "Z-9"}, "session_id": "s"})
    assert "could not find order Z-9" in reply.text
    state = dm.state("s")
    assert state.tool_calls[-1].error == "KeyError: 'Z-9'" and "order_id" not in state.slots


def test_block_card_confirms_then_blocks_exactly_once(tools: Tools) -> None:
    log = MemoryPublisher()
    dm = manager(log, MemoryStore("t"), tools)
    ask = dm.process({"text": "block my card", "intent": "block_card", "slots": {"card_last4": "4242"}, "session_id": "c"})
    assert ask.text.startswith("Shall I block your card ending 4242") and tools.blocked == []
    done = dm.process({"text": "yes", "session_id": "c"})  # no intent: the session's carries over
    assert tools.blocked == ["4242"] and "blocked (reference BLK-100)" in done.text
    again = dm.process({"text": "is it blocked?", "session_id": "c"})
    assert tools.blocked == ["4242"] and "BLK-100" in again.text
    assert dm.state("c").confirmed == ("card 4242 blocked, reference BLK-100",) * 2


def test_block_card_no_keeps_the_card(tools: Tools) -> None:
    dm = manager(MemoryPublisher(), MemoryStore("t"), tools)
    dm.process({"text": "block card", "intent": "block_card", "slots": {"card_last4": "1111"}, "session_id": "c"})
    reply = dm.process({"text": "No.", "session_id": "c"})
    assert "stays active" in reply.text and tools.blocked == [] and "awaiting_confirmation" not in dm.state("c").slots


def test_another_region_continues_the_conversation_from_the_log(tools: Tools) -> None:
    log = MemoryPublisher()
    east = manager(log, MemoryStore("t"), tools, region="east")
    east.process({"text": "block my card", "intent": "block_card", "slots": {"card_last4": "4242"}, "session_id": "c"})
    # East is gone. North's store was folded from the log; north's manager picks up the next message.
    north_store = MemoryStore("t")
    project(north_store, log.events)
    north = manager(log, north_store, tools, region="north")
    reply = north.process({"text": "yes", "session_id": "c"})
    assert tools.blocked == ["4242"] and "blocked" in reply.text
    assert [e.seq for e in log.events] == list(range(1, len(log.events) + 1))
    assert log.events[-1].origin == "north"
    assert fold(log.events)["c"] == north.state("c")


def test_unhandled_intent_hands_off(tools: Tools) -> None:
    dm = manager(MemoryPublisher(), MemoryStore("t"), tools)
    reply = dm.process({"text": "mortgage?", "intent": "mortgage", "session_id": "m"})
    assert reply.handoff and dm.state("m").status == "handoff"


class FlakyPublisher(MemoryPublisher):
    def __init__(self) -> None:
        super().__init__()
        self.fail = False

    def publish(self, events: Sequence[DialogEvent]) -> None:
        if self.fail:
            raise DeliveryError("broker down")
        super().publish(events)


def test_an_unacknowledged_turn_is_not_answered_and_not_remembered(tools: Tools) -> None:
    log, store = FlakyPublisher(), MemoryStore("t")
    dm = manager(log, store, tools)
    dm.process({"text": "where is my order?", "intent": "inquire_order", "session_id": "s"})
    project(store, log.events)
    log.fail = True
    with pytest.raises(DeliveryError):
        dm.process({"text": "A-1", "slots": {"order_id": "A-1"}, "session_id": "s"})
    # The failed turn is not in the manager's view: it re-reads the store (= the log).
    assert dm.state("s") == store.get("s") and "order_id" not in dm.state("s").slots


@pytest.mark.parametrize(
    "message",
    [{"text": "hi"}, {"session_id": "", "text": "hi"}, {"session_id": "s"}, {"session_id": "s", "text": "x", "slots": [1]}],
)
def test_bad_messages_are_rejected(tools: Tools, message: dict[str, Any]) -> None:
    with pytest.raises(DialogError):
        manager(MemoryPublisher(), MemoryStore("t"), tools).process(message)
