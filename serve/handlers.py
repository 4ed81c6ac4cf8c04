"""The region service's intent handlers: knowledge (answers from this region's index, citing
its sources) and the order-status tool. Registered on the dialog manager by intent."""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping
from typing import Any

from dialog.manager import Answer
from dialog.session import Session
from indexer.errors import IndexerError
from serve.answers import Composed, source_label

log = logging.getLogger(__name__)

KNOWLEDGE = "knowledge"
INQUIRE_ORDER = "inquire_order"
INDEX_UNAVAILABLE = ("I cannot search this region's knowledge base right now, so I have no sourced answer "
                     "for you; please ask again in a minute.")

# A stand-in for the order system the assistant calls as a tool (the demo and tests use it).
DEMO_ORDERS: dict[str, dict[str, Any]] = {
    "A-1001": {"status": "shipped", "eta": "2026-12-02"},
    "A-1002": {"status": "being packed", "eta": "2026-12-05"},
    "A-1003": {"status": "delivered"},
}


def demo_order_lookup(order_id: str) -> Mapping[str, Any]:
    order = DEMO_ORDERS.get(str(order_id).strip().upper())
    if order is None:
        raise LookupError(f"no order {order_id}")
    return order


class KnowledgeHandler:
    """Answers the customer's message from the region's index. ``last`` holds the full answer
    (hits included) of the latest turn for the HTTP layer; turns are serialised by the service.

    When the index cannot be searched (the region's Milvus is down or answers with an error) the
    turn still happens: the reply says so, cites nothing, and the turn's events are recorded like
    any other. Failing the turn instead (a 503) would stop the whole conversation on the active
    region, order questions included, for as long as its Milvus is down: the customer retries the
    same message and the standby refuses turns (the fault suite's milvus-down saw 18 turns in 60 s
    where 205 were acknowledged before)."""

    def __init__(self, answer: Callable[[str], Composed]) -> None:
        self._answer = answer
        self.last: Composed | None = None

    def handle(self, session: Session) -> Answer:
        try:
            composed = self._answer(session.text)
        except IndexerError as exc:
            log.warning("knowledge search failed (%s); answering without sources", exc)
            composed = Composed(INDEX_UNAVAILABLE, (), "none (index unavailable)")
        self.last = composed
        return Answer(composed.text, sources=tuple(source_label(h) for h in composed.cited))
