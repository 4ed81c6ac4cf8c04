"""Synthetic conversations for the benchmark and the tests: realistic event mixes, reproducible.

Conversations are generated as events directly (no manager, no tools), so millions can be made
quickly; :func:`interleave` merges them the way concurrent customers would, keeping each
session's own order.
"""

from __future__ import annotations

import random
from collections.abc import Sequence
from typing import Any

from dialog import events as ev
from dialog.events import DialogEvent

INTENTS = ("inquire_order", "block_card", "balance", "loan_rates", "address_change")


def conversation(
    session_id: str, rng: random.Random, origin: str = "east", start_ms: int = 1_700_000_000_000, turns: int | None = None
) -> list[DialogEvent]:
    """One session: started, then ``turns`` exchanges (utterance, intent, slots, tool, reply)."""
    events: list[DialogEvent] = []
    ts = start_ms

    def add(cls: type[DialogEvent], **payload: Any) -> None:
        nonlocal ts
        ts += rng.randint(50, 5000)
        seq = len(events) + 1
        events.append(
            cls(session_id=session_id, seq=seq, event_id=f"{session_id}-{seq}-{rng.getrandbits(48):012x}",
                ts_ms=ts, origin=origin, **payload)  # fmt: skip
        )

    add(ev.SessionStarted, channel=rng.choice(("web", "app", "voice")), customer_id=f"c{rng.randint(1, 10**6)}")
    for turn in range(turns if turns is not None else rng.randint(1, 4)):
        add(ev.UserUtterance, text=f"message {turn} " + "x" * rng.randint(5, 80))
        if turn == 0 or rng.random() < 0.2:
            add(ev.IntentDetected, intent=rng.choice(INTENTS), confidence=round(rng.random(), 3))
        for _ in range(rng.randint(0, 2)):
            name = rng.choice(("order_id", "card_last4", "amount", "date"))
            if rng.random() < 0.85:
                add(ev.SlotFilled, name=name, value=rng.choice((rng.randint(1, 9999), f"v{rng.randint(1, 999)}")))
            else:
                add(ev.SlotCleared, name=name)
        if rng.random() < 0.5:
            ok = rng.random() < 0.9
            add(
                ev.ToolCalled,
                name=rng.choice(("order_lookup", "block_card", "balance")),
                arguments={"id": rng.randint(1, 10**6)},
                result={"status": "ok", "n": rng.randint(0, 100)} if ok else None,
                error=None if ok else "TimeoutError: upstream",
            )
        add(
            ev.BotReplied,
            text=f"reply {turn} " + "y" * rng.randint(10, 120),
            sources=tuple(f"doc/{rng.randint(1, 500)}" for _ in range(rng.randint(0, 3))),
            confirmed=(f"fact {turn}",) if rng.random() < 0.3 else (),
        )
    if rng.random() < 0.1:
        add(ev.HandoffRequested, reason="customer asked for a human", queue="general")
    if rng.random() < 0.4:
        add(ev.SessionClosed, reason="completed")
    return events


def interleave(conversations: Sequence[Sequence[DialogEvent]], rng: random.Random) -> list[DialogEvent]:
    """Merge sessions in a random order, each session's events staying in their own order."""
    slots = [i for i, conv in enumerate(conversations) for _ in conv]
    rng.shuffle(slots)
    cursor = [0] * len(conversations)
    out: list[DialogEvent] = []
    for i in slots:
        out.append(conversations[i][cursor[i]])
        cursor[i] += 1
    return out
