from __future__ import annotations

import random
from typing import Any

import orjson
from hypothesis import given, settings
from hypothesis import strategies as st

from dialog.events import (
    BotReplied,
    DialogEvent,
    HandoffRequested,
    IntentDetected,
    SessionClosed,
    SessionStarted,
    SlotCleared,
    SlotFilled,
    ToolCalled,
    UserUtterance,
)
from dialog.loadgen import conversation, interleave
from dialog.reducer import Outcome, apply, fold, step
from dialog.state import SessionState


def ev(cls: type[DialogEvent], seq: int, sid: str = "s", eid: str | None = None, **payload: Any) -> DialogEvent:
    return cls(session_id=sid, seq=seq, event_id=eid or f"{sid}-{seq}", ts_ms=1000 + seq, origin="east", **payload)


def test_a_conversation_folds_into_its_state() -> None:
    events = [
        ev(SessionStarted, 1, channel="web", customer_id="c9"),
        ev(UserUtterance, 2, text="where is my order?"),
        ev(IntentDetected, 3, intent="inquire_order", confidence=0.9),
        ev(SlotFilled, 4, name="order_id", value="A-1"),
        ev(ToolCalled, 5, name="order_lookup", arguments={"order_id": "A-1"}, result={"status": "shipped"}),
        ev(BotReplied, 6, text="Order A-1 is shipped.", sources=("orders/A-1",), confirmed=("A-1 shipped",)),
        ev(SlotCleared, 7, name="order_id"),
        ev(HandoffRequested, 8, reason="wants a human"),
        ev(SessionClosed, 9, reason="done"),
    ]
    state = fold(events)["s"]
    assert state.status == "closed" and state.intent == "inquire_order" and state.slots == {}
    assert [(t.role, t.text) for t in state.turns] == [("user", "where is my order?"), ("bot", "Order A-1 is shipped.")]
    assert state.turns[1].sources == ("orders/A-1",)
    assert state.tool_calls[0].result == {"status": "shipped"} and state.tool_calls[0].ok
    assert state.confirmed == ("A-1 shipped",)
    assert state.handoff_reason == "wants a human"
    assert (state.last_seq, state.applied, state.gaps, state.channel) == (9, 9, (), "web")


def test_duplicates_change_nothing() -> None:
    s = fold([ev(SessionStarted, 1), ev(UserUtterance, 2, text="a")])["s"]
    redelivered = step(s, ev(UserUtterance, 2, text="a"))
    assert redelivered.outcome is Outcome.DUPLICATE and redelivered.state is s
    # The same event re-sent under a new number is still the same event.
    resent = step(s, ev(UserUtterance, 3, eid="s-2", text="a"))
    assert resent.outcome is Outcome.DUPLICATE and resent.state is s


def test_a_second_writer_on_a_seq_is_a_conflict_not_an_overwrite() -> None:
    s = fold([ev(SessionStarted, 1), ev(UserUtterance, 2, text="from east")])["s"]
    other = step(s, ev(UserUtterance, 2, eid="north-2", text="from north"))
    assert other.outcome is Outcome.CONFLICT and other.state is s


def test_a_gap_is_recorded_and_reported_and_the_rest_still_applies() -> None:
    s = fold([ev(SessionStarted, 1), ev(UserUtterance, 2, text="a")])["s"]
    after_gap = step(s, ev(UserUtterance, 5, text="b"))
    assert after_gap.outcome is Outcome.GAP and after_gap.missing == (3, 4)
    assert after_gap.state.gaps == ((3, 4),) and after_gap.state.last_seq == 5
    assert [t.text for t in after_gap.state.turns] == ["a", "b"]
    # A straggler from the hole does not rewrite history after the fact.
    late = step(after_gap.state, ev(UserUtterance, 3, text="late"))
    assert late.outcome is Outcome.LATE and late.state is after_gap.state


def test_the_reducer_does_not_mutate_its_input() -> None:
    s = fold([ev(SessionStarted, 1), ev(SlotFilled, 2, name="x", value=1)])["s"]
    before = orjson.dumps(s.to_dict())
    apply(s, ev(SlotFilled, 3, name="x", value=2))
    apply(s, ev(SlotCleared, 3, name="x"))
    assert orjson.dumps(s.to_dict()) == before


# ---------------------------------------------------------------------------- properties

json_scalar = st.one_of(
    st.none(), st.booleans(), st.integers(-(10**9), 10**9), st.text(max_size=8),
    st.floats(allow_nan=False, allow_infinity=False),
)  # fmt: skip
json_value = st.recursive(
    json_scalar, lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=4), inner, max_size=3),
    max_leaves=6,
)  # fmt: skip
names = st.sampled_from(["order_id", "card_last4", "amount"])
texts = st.text(max_size=12)

payload = st.one_of(
    st.builds(lambda c, u: (SessionStarted, {"channel": c, "customer_id": u}), texts, texts),
    st.builds(lambda t: (UserUtterance, {"text": t}), texts),
    st.builds(lambda i, c: (IntentDetected, {"intent": i, "confidence": c}), texts,
              st.floats(0, 1, allow_nan=False)),  # fmt: skip
    st.builds(lambda n, v: (SlotFilled, {"name": n, "value": v}), names, json_value),
    st.builds(lambda n: (SlotCleared, {"name": n}), names),
    st.builds(lambda n, a, r, e: (ToolCalled, {"name": n, "arguments": a, "result": r, "error": e}),
              texts, st.dictionaries(texts, json_value, max_size=2), json_value, st.none() | texts),  # fmt: skip
    st.builds(lambda t, s, c: (BotReplied, {"text": t, "sources": tuple(s), "confirmed": tuple(c)}),
              texts, st.lists(texts, max_size=2), st.lists(texts, max_size=2)),  # fmt: skip
    st.builds(lambda r: (HandoffRequested, {"reason": r}), texts),
    st.builds(lambda r: (SessionClosed, {"reason": r}), texts),
)


@st.composite
def session_events(draw: st.DrawFn, sid: str) -> list[DialogEvent]:
    payloads = draw(st.lists(payload, min_size=1, max_size=12))
    # Some sequence numbers may be missing (a malformed event went to the dead letters).
    skip = draw(st.sets(st.integers(1, len(payloads)), max_size=2))
    out, seq = [], 0
    for i, (cls, data) in enumerate(payloads, start=1):
        seq += 2 if i in skip else 1
        out.append(cls(session_id=sid, seq=seq, event_id=f"{sid}/{seq}", ts_ms=seq * 10, origin="east", **data))
    return out


@st.composite
def event_log(draw: st.DrawFn) -> list[DialogEvent]:
    n = draw(st.integers(1, 4))
    sessions = [draw(session_events(f"s{i}")) for i in range(n)]
    return interleave(sessions, draw(st.randoms(use_true_random=False)))


def snapshot(states: dict[str, SessionState]) -> dict[str, SessionState]:
    """What a snapshot does to states: JSON bytes and back."""
    raw = orjson.dumps([s.to_dict() for s in states.values()])
    return {d["session_id"]: SessionState.from_dict(d) for d in orjson.loads(raw)}


@settings(max_examples=300, deadline=None)
@given(log=event_log(), data=st.data())
def test_prefix_snapshot_rest_equals_everything(log: list[DialogEvent], data: st.DataObject) -> None:
    cut = data.draw(st.integers(0, len(log)))
    restored = snapshot(fold(log[:cut]))
    assert fold(log[cut:], restored) == fold(log)


@settings(max_examples=300, deadline=None)
@given(log=event_log(), data=st.data())
def test_any_duplication_gives_the_same_state(log: list[DialogEvent], data: st.DataObject) -> None:
    copies = data.draw(st.lists(st.integers(0, len(log) - 1), max_size=len(log) * 2))
    noisy = list(log)
    for i in copies:
        original = noisy.index(log[i])
        noisy.insert(data.draw(st.integers(original + 1, len(noisy))), log[i])
    assert fold(noisy) == fold(log)


@settings(max_examples=100, deadline=None)
@given(log=event_log())
def test_gaps_recorded_are_exactly_the_missing_numbers(log: list[DialogEvent]) -> None:
    states = fold(log)
    for sid, state in states.items():
        seqs = {e.seq for e in log if e.session_id == sid}
        missing = {n for a, b in state.gaps for n in range(a, b + 1)}
        assert missing == set(range(1, state.last_seq + 1)) - seqs
        assert state.applied == len(seqs)


def test_generated_conversations_fold_without_gaps() -> None:
    rng = random.Random(7)
    convs = [conversation(f"s{i}", rng) for i in range(200)]
    states = fold(interleave(convs, rng))
    assert len(states) == 200
    for conv in convs:
        state = states[conv[0].session_id]
        assert not state.gaps and state.applied == state.last_seq == len(conv)


@settings(max_examples=100, deadline=None)
@given(log=event_log())
def test_state_json_is_its_dict_and_round_trips(log: list[DialogEvent]) -> None:
    for state in fold(log).values():
        assert state.to_json() == orjson.dumps(state.to_dict())
        assert SessionState.from_dict(orjson.loads(state.to_json())) == state
