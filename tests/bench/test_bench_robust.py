"""The bench survives transient errors in its own probes (bounded retries, counted) and a row that
really breaks is a failed row in the table, not a lost run."""

from __future__ import annotations

from typing import Any

import pytest

from bench import report
from bench.retry import Retries


class Flaky:
    def __init__(self, failures: int) -> None:
        self.failures = failures
        self.calls = 0

    def __call__(self) -> str:
        self.calls += 1
        if self.calls <= self.failures:
            raise ConnectionError(f"refused #{self.calls}")
        return "ok"


def test_a_transient_error_is_retried_and_counted() -> None:
    pauses: list[float] = []
    retries = Retries(attempts=4, first_pause_s=0.5, max_pause_s=1.0, sleep=pauses.append)
    fn = Flaky(failures=3)
    assert retries.call("milvus connect (east)", fn) == "ok"
    assert fn.calls == 4
    assert pauses == [0.5, 1.0, 1.0]  # growing, capped
    assert retries.to_dict() == {"total": 3, "by_probe": {"milvus connect (east)": 3}, "gave_up": {}}


def test_the_budget_is_bounded_and_the_last_error_propagates() -> None:
    retries = Retries(attempts=3, sleep=lambda _: None)
    fn = Flaky(failures=10)
    with pytest.raises(ConnectionError, match="refused #3"):
        retries.call("committed offsets (north)", fn)
    assert fn.calls == 3
    counted = retries.to_dict()
    assert counted["by_probe"] == {"committed offsets (north)": 2}
    assert counted["gave_up"] == {"committed offsets (north)": 1}


def test_failures_retried_by_the_caller_are_counted_too() -> None:
    retries = Retries()
    retries.note("milvus get (east)")
    retries.note("milvus get (east)")
    assert retries.total == 2


def _results(**rows: Any) -> dict[str, Any]:
    base: dict[str, Any] = {
        "mode": "quick", "duration_s": 60.0,
        "machine": {"cpu": "test CPU", "cores": 2, "ram_gb": 24.0, "load_start": [1.0, 1.0, 1.0],
                    "load_end": [1.0, 1.0, 1.0]},
        "corpus": {"docs": 40, "chunks": 80},
        "settings": {"embed_batch_size": 64, "embed_threads": 2, "regions": ["east", "north"]},
        "embed_limit": {"passages_per_s": 100.0, "before": {"passages_per_s": 100.0, "passages": 192},
                        "after": {"passages_per_s": 100.0, "passages": 192}},
        "changed": {"docs": 40, "docs_per_s": 10.0, "passages_per_s": 95.0, "ratio_to_limit": 0.95},
        "unchanged": {"docs": 40, "docs_per_s": 2500.0, "embedded": 0, "cache_rows_added": 0},
        "deletes": {"docs": 40, "docs_per_s": 2500.0, "embedded": 0, "cache_rows_added": 0},
        "freshness": {"rate_per_s": 2.0, "load_fraction": 0.2, "p50_ms": 100.0, "p99_ms": 200.0, "changes": 8,
                      "not_seen": 0, "stages_p50_ms": {}},
        "peer": {"available": True, "corpus_docs": 40, "runs": [
            {"fraction": f, "changed_docs": 2, "ours_s": 1.0, "theirs_s": 12.0, "theirs": {"embed_seconds": 1.0},
             "speedup": 12.0, "checked": True} for f in (0.001, 0.01)]},
        "dialog": {"full_replay_events_per_s": 1000.0, "restore_sessions": 10, "restore_tail_events": 3,
                   "restore_total_s": 0.5},
        "rss": {"services": {"postgres": {"peak_bytes": 10, "processes": 1, "how": "rss"}},
                "stack_total_bytes": 10, "bench_process_bytes": 10},
        "retries": {"total": 0, "by_probe": {}, "gave_up": {}},
        "search": {"k": 5, "filter": 'status == "published"', "regions": {
            "east": {"searches": 50, "rows": 80, "empty_results": 0, "p50_ms": 5.0, "p99_ms": 9.0},
            "north": {"searches": 50, "rows": 80, "empty_results": 0, "p50_ms": 25.0, "p99_ms": 40.0}}},
        "http_search": {"k": 5, "regions": {
            "east": {"searches": 50, "empty_results": 0, "p50_ms": 12.0, "p99_ms": 30.0},
            "north": {"searches": 50, "empty_results": 0, "p50_ms": 14.0, "p99_ms": 35.0}}},
    }
    base.update(rows)
    return base


def test_a_complete_run_has_no_failed_row() -> None:
    r = _results()
    table = report.rows(r)
    assert [row.key for row in table] == list(report.ROWS)
    assert report.failed_rows(r) == []
    assert "retried" not in report.render(r)
    search = {row.key: row for row in table}["8"]
    assert search[4] == "MISSED" and "north p50 25.0 ms" in search[2]  # one region over the target
    http = {row.key: row for row in table}["9"]
    assert http[4] == "met" and "east p50 12.0 ms, p99 30.0 ms; north p50 14.0 ms, p99 35.0 ms" == http[2]
    assert "50 queries at 80 chunks" in http[1]


def test_the_http_search_row_is_missed_on_a_slow_tail_or_an_empty_answer() -> None:
    slow = _results(http_search={"k": 5, "regions": {
        "east": {"searches": 50, "empty_results": 0, "p50_ms": 12.0, "p99_ms": 130.0}}})
    assert {row.key: row for row in report.rows(slow)}["9"].verdict == "MISSED"
    empty = _results(http_search={"k": 5, "regions": {
        "east": {"searches": 50, "empty_results": 2, "p50_ms": 12.0, "p99_ms": 30.0}}})
    row9 = {row.key: row for row in report.rows(empty)}["9"]
    assert row9[4] == "MISSED" and "(2 empty)" in row9[2]
    failed = _results(http_search={"error": "HTTPError: 503 Server Error"})
    assert report.failed_rows(failed) == ["9"]


def test_a_failed_row_says_why_and_the_others_keep_their_figures() -> None:
    r = _results(freshness={"error": "MilvusException: Fail connecting to server on 127.0.0.1:4321"},
                 retries={"total": 7, "by_probe": {"milvus connect (east)": 5, "milvus get (north)": 2},
                          "gave_up": {"milvus connect (east)": 1}})
    del r["deletes"]  # a saved run of a version without this row
    table = {row.key: row for row in report.rows(r)}
    assert list(table) == list(report.ROWS)
    assert table["4"][4] == "FAILED" and "Fail connecting" in table["4"][2]
    assert table["3b"][4] == "-" and "not measured" in table["3b"][2]
    assert table["2"][4] == "met" and table["3a"][4] == "met"
    assert report.failed_rows(r) == ["4"]
    assert {row.key: row for row in report.rows(r)}["5b"].verdict == "met"
    text = report.render(r)
    assert "retried: 7 (milvus connect (east) 5, milvus get (north) 2)" in text
    assert "rows that FAILED" in text and report.markdown(r).count("FAILED") == 1


def test_the_link_row_reports_both_reads_and_their_ratio() -> None:
    links = {"region": "east", "records": 5000, "record_bytes": 1024, "edge_over_direct": 0.5,
             "direct": {"seconds": 1.0, "records_per_s": 5000.0, "mb_per_s": 5.12},
             "edge": {"seconds": 2.0, "records_per_s": 2500.0, "mb_per_s": 2.56}}
    row11 = {row.key: row for row in report.rows(_results(links=links))}["11"]
    assert row11.verdict == "-" and "5000 records of 1024 B from east" in row11[1]
    assert row11[2] == "direct 5,000 records/s (5.1 MB/s); edge 2,500 records/s (2.6 MB/s); 0.50x"
    assert "11" not in {row.key for row in report.rows(_results())}  # a run without the row: not shown
    assert report.failed_rows(_results(links={"error": "TimeoutError: read 0 of 5000"})) == ["11"]
