"""A knowledge turn whose search fails (the region's Milvus is down) is still a turn: recorded,
answered without sources, and the conversation goes on (in memory: publisher and store fakes)."""

from __future__ import annotations

import pytest

from dialog.events import BotReplied, UserUtterance
from dialog.handlers.order_status import InquireOrderHandler
from dialog.manager import DialogManager, MemoryPublisher
from dialog.memory_store import MemoryStore
from indexer.errors import RegionUnavailable, SinkError
from serve.answers import Composed
from serve.handlers import INDEX_UNAVAILABLE, INQUIRE_ORDER, KNOWLEDGE, KnowledgeHandler, demo_order_lookup


def _failing(error: Exception) -> KnowledgeHandler:
    def answer(_text: str) -> Composed:
        raise error

    return KnowledgeHandler(answer)


@pytest.mark.parametrize("error", [RegionUnavailable("http://127.0.0.1:1", "Fail connecting to server"),
                                   SinkError("collection not loaded")])
def test_a_failed_search_is_an_answer_without_sources_not_a_failed_turn(error: Exception) -> None:
    publisher = MemoryPublisher()
    manager = DialogManager(publisher, sessions=MemoryStore("t"), region="east")
    knowledge = _failing(error)
    manager.register_handler(KNOWLEDGE, knowledge)
    manager.register_handler(INQUIRE_ORDER, InquireOrderHandler(demo_order_lookup))

    reply = manager.process({"session_id": "s-1", "text": "How do I read a JSON file?", "intent": KNOWLEDGE})
    assert reply.text == INDEX_UNAVAILABLE and reply.sources == ()
    assert knowledge.last is not None and knowledge.last.cited == () and "unavailable" in knowledge.last.composer
    said = [type(e) for e in publisher.events if isinstance(e, UserUtterance | BotReplied)]
    assert said == [UserUtterance, BotReplied]  # the turn is on the log like any other

    # The conversation goes on: the next turn is answered as usual.
    later = manager.process({"session_id": "s-1", "text": "Where is my order?", "intent": INQUIRE_ORDER})
    assert later.last_seq > reply.last_seq


def test_any_other_error_of_the_answer_still_fails_the_turn() -> None:
    manager = DialogManager(MemoryPublisher(), sessions=MemoryStore("t"), region="east")
    manager.register_handler(KNOWLEDGE, _failing(ValueError("a bug")))
    with pytest.raises(ValueError, match="a bug"):
        manager.process({"session_id": "s-2", "text": "?", "intent": KNOWLEDGE})
