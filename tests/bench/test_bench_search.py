"""The search row's queries come from the corpus."""

from bench.search import queries_from


def test_queries_are_first_sentences_of_evenly_spaced_documents() -> None:
    bodies = [f"Doc {i} says hello. More text follows." for i in range(10)]
    assert queries_from(bodies, 5) == ["Doc 0 says hello", "Doc 2 says hello", "Doc 4 says hello",
                                       "Doc 6 says hello", "Doc 8 says hello"]
    assert queries_from(bodies, 0) == [] and queries_from([], 3) == []
    assert len(queries_from(["x" * 500], 1)[0]) == 200
