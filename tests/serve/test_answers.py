"""The extractive answer and its citations, as pure functions of the question and the hits."""

from __future__ import annotations

import re

from hypothesis import given
from hypothesis import strategies as st

from indexer.ports import Hit
from serve.answers import NOTHING_FOUND, best_passages, extract, extractive, source_label
from serve.handlers import KnowledgeHandler

RETURNS = ("You can return any item within 30 days of delivery. Print the return label from your account page. "
           "The refund follows within five days.")
SHIPPING = "Standard shipping takes three to five working days. Express parcels arrive the next working day."


def hit(doc_id: str, chunk: int, score: float, text: str = "Some text.", title: str = "", lsn: int | None = 42) -> Hit:
    source = {"kind": "debezium", "topic": "cms.public.documents", "partition": 1, "offset": 17, "lsn": lsn}
    return Hit(doc_id=doc_id, chunk_index=chunk, title=title or doc_id.title(), text=text, score=score, version=3,
               source=source)


def test_best_passages_keep_the_best_chunk_of_each_document_best_first() -> None:
    hits = [hit("a", 0, 0.50), hit("b", 2, 0.90), hit("a", 1, 0.70), hit("c", 0, 0.60), hit("b", 0, 0.80),
            hit("d", 0, 0.10)]
    best = best_passages(hits)
    assert [(h.doc_id, h.chunk_index) for h in best] == [("b", 2), ("a", 1), ("c", 0)]
    assert [h.doc_id for h in best_passages(hits, limit=5)] == ["b", "a", "c", "d"]
    assert best_passages([]) == ()


def test_extract_keeps_the_sentences_that_share_most_words_with_the_question() -> None:
    assert extract("How many days do I have to return an item?", RETURNS, max_chars=60) == \
        "You can return any item within 30 days of delivery."
    # Several sentences fit: they come back in the passage's order, not in rank order.
    # The third sentence shares two words, the first one, the second none (and does not fit).
    both = extract("refund days", RETURNS, max_chars=100)
    assert both == "You can return any item within 30 days of delivery. The refund follows within five days."


def test_extract_stays_within_its_budget_and_marks_a_cut() -> None:
    long = "word " * 200 + "end."
    out = extract("word", long, max_chars=50)
    assert len(out) == 50 and out.endswith("...")
    assert extract("anything", "   ") == ""


@given(
    st.lists(st.text(alphabet="abc xyz.!?\n", min_size=1, max_size=60), min_size=1, max_size=8),
    st.text(alphabet="abc xyz", max_size=20),
    st.integers(min_value=10, max_value=200),
)
def test_extract_says_nothing_that_is_not_in_the_passage(parts: list[str], question: str, budget: int) -> None:
    text = " ".join(parts)
    out = extract(question, text, max_chars=budget)
    assert len(out) <= budget
    if out.endswith("..."):  # one sentence longer than the budget, cut: a prefix of a sentence
        assert " ".join(text.split()).find(out[:-3].rstrip()) >= 0
        return
    sentences = {s.strip() for s in re.split(r"(?<=[.!?])\s+", " ".join(text.split())) if s.strip()}
    assert {s for s in re.split(r"(?<=[.!?])\s+", out) if s} <= sentences


def test_an_extractive_answer_cites_each_passage_by_number() -> None:
    hits = [hit("kb-shipping", 0, 0.8, SHIPPING, "Shipping times"), hit("kb-returns", 0, 0.6, RETURNS, "Returns"),
            hit("kb-shipping", 1, 0.5, "Other chunk.")]
    composed = extractive("How long does standard shipping take?", hits)
    assert composed.composer == "extractive"
    assert [(h.doc_id, h.chunk_index) for h in composed.cited] == [("kb-shipping", 0), ("kb-returns", 0)]
    lines = composed.text.splitlines()
    assert lines[0] == "From the knowledge base:"
    assert lines[1].startswith("[1] Standard shipping takes three to five working days.")
    assert lines[1].endswith("(Shipping times)")
    assert lines[2].startswith("[2] ") and lines[2].endswith("(Returns)")
    assert len(lines) == 3


def test_no_hits_is_said_plainly_and_cites_nothing() -> None:
    composed = extractive("anything?", [])
    assert composed.text == NOTHING_FOUND and composed.cited == ()


def test_a_source_label_leads_back_to_the_change_event() -> None:
    assert source_label(hit("kb-returns", 2, 0.5)) == "kb-returns#2@cms.public.documents[1]:17 lsn=42"
    # A CMS event has no WAL position.
    assert source_label(hit("kb-returns", 0, 0.5, lsn=None)) == "kb-returns#0@cms.public.documents[1]:17"


def test_the_knowledge_handler_replies_with_the_answer_and_its_labels() -> None:
    from dialog.session import Session
    from dialog.state import SessionState

    hits = [hit("kb-returns", 0, 0.9, RETURNS, "Returns")]
    handler = KnowledgeHandler(lambda text: extractive(text, hits))
    session = Session(SessionState(session_id="s-1"), "can I return it?", lambda cls, state, payload: None)
    answer = handler.handle(session)
    assert answer.text.startswith("From the knowledge base:\n[1] You can return any item")
    assert answer.sources == ("kb-returns#0@cms.public.documents[1]:17 lsn=42",)
    assert handler.last is not None and handler.last.cited == tuple(hits)
