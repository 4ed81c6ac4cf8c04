"""``inquire_order``: ask for the order number until we have it, then look the order up."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

from dialog.manager import Answer
from dialog.session import Session

OrderLookup = Callable[..., Mapping[str, Any]]  # lookup(order_id=...) -> {"status": ..., "eta": ...}


class InquireOrderHandler:
    TOOL = "order_lookup"

    def __init__(self, lookup: OrderLookup) -> None:
        self._lookup = lookup

    def handle(self, session: Session) -> Answer:
        order_id = session.slot("order_id")
        if not order_id:
            return Answer("Which order is it about? Please give me the order number.")
        call = session.call_tool(self.TOOL, self._lookup, {"order_id": order_id})
        if not call.ok or not isinstance(call.result, Mapping):
            # The slot was probably wrong: forget it so the next message can give it again.
            session.clear_slot("order_id")
            return Answer(f"I could not find order {order_id}. Could you check the number?")
        status = call.result.get("status", "unknown")
        eta = call.result.get("eta")
        text = f"Order {order_id} is {status}" + (f", expected on {eta}." if eta else ".")
        return Answer(text, sources=(f"orders/{order_id}",), confirmed=(f"order {order_id} is {status}",))
