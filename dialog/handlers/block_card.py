"""``block_card``: a two-turn flow with a side effect, the kind a failover must not break.

Turn 1 ("block my card", slot ``card_last4``): ask for confirmation and remember that we asked
(slot ``awaiting_confirmation``). Turn 2 ("yes"/"no", no intent: the session's intent carries
over): block the card through the tool, or not. The tool call and its reference are in the log,
so asking again in any region, or after a failover, answers from the record instead of blocking
twice.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

from dialog.manager import Answer
from dialog.session import Session

BlockCard = Callable[..., Mapping[str, Any]]  # block(card_last4=...) -> {"reference": ...}

YES = {"yes", "y", "yes please", "confirm", "ok", "do it"}
NO = {"no", "n", "cancel", "stop"}


class BlockCardHandler:
    TOOL = "block_card"

    def __init__(self, block: BlockCard) -> None:
        self._block = block

    def handle(self, session: Session) -> Answer:
        last4 = session.slot("card_last4")
        if not last4:
            return Answer("Which card should I block? Tell me its last four digits.")
        done = session.successful_call(self.TOOL, {"card_last4": last4})
        if done is not None:
            ref = (done.result or {}).get("reference", "")
            return Answer(
                f"Your card ending {last4} is blocked (reference {ref}).",
                confirmed=(f"card {last4} blocked, reference {ref}",),
            )
        if not session.slot("awaiting_confirmation"):
            session.fill_slot("awaiting_confirmation", True)
            return Answer(f"Shall I block your card ending {last4}? Please answer yes or no.")

        reply = session.text.strip().lower().rstrip(".!")
        if reply in NO:
            session.clear_slot("awaiting_confirmation")
            return Answer(f"All right, your card ending {last4} stays active.")
        if reply not in YES:
            return Answer(f"Sorry, should I block the card ending {last4}? Yes or no?")
        session.clear_slot("awaiting_confirmation")
        call = session.call_tool(self.TOOL, self._block, {"card_last4": last4})
        if not call.ok:
            session.handoff(reason=f"block_card failed: {call.error}", queue="cards")
            return Answer("I could not block the card myself; I am passing you to a colleague right now.")
        ref = (call.result or {}).get("reference", "")
        return Answer(
            f"Done: your card ending {last4} is blocked (reference {ref}).",
            confirmed=(f"card {last4} blocked, reference {ref}",),
        )
