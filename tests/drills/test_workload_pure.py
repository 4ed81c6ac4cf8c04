"""The pure decisions of the drill's workload and fault injection (no stack)."""

from __future__ import annotations

import random
from pathlib import Path

import pytest

from drills.errors import BadInput
from drills.inject import descendants, parse_ppid, region_workers
from drills.workload_model import Route, doc_body, next_doc_op, session_id, turn_message
from regionsync.settings import Settings


def route(**kw: object) -> Route:
    args: dict = {"regions": ("east", "north"), "start": "east", "avoid_min_s": 2.0, "avoid_max_s": 60.0,
                  "retry_pause_s": 0.2, "max_busy": 2}
    args.update(kw)
    return Route(**args)


def test_a_failed_region_sends_the_customer_to_the_other_one() -> None:
    r = route()
    assert r.failed("east", now=100.0) == 0.2
    assert r.current == "north"


def test_a_409_naming_the_failed_region_keeps_the_customer_waiting_at_the_standby() -> None:
    r = route()
    r.failed("east", now=100.0)
    # north is not promoted yet: it names east, which just failed us: wait here and ask again.
    assert r.refused("north", "east", now=101.0) == 0.2
    assert r.current == "north"
    # After the avoidance window (2 s after a first failure), the hint is followed again.
    assert r.refused("north", "east", now=102.5) == 0.0
    assert r.current == "east"


def test_the_avoidance_window_doubles_with_failures_in_a_row_and_resets_on_an_answer() -> None:
    r = route()
    assert [r.avoid_s("east") for _ in range(1)] == [0.0]
    windows = []
    for i in range(8):
        r.failed("east", now=float(i))
        windows.append(r.avoid_s("east"))
    assert windows == [2.0, 4.0, 8.0, 16.0, 32.0, 60.0, 60.0, 60.0]
    assert r.recently_failed("east", 7.0 + 59.0) and not r.recently_failed("east", 7.0 + 61.0)
    r.ok("east")
    assert r.avoid_s("east") == 0.0 and not r.recently_failed("east", 8.0)


def test_a_409_naming_a_healthy_region_is_followed_at_once() -> None:
    r = route(start="north")
    assert r.refused("north", "east", now=5.0) == 0.0
    assert r.current == "east"
    assert r.refused("east", "mars", now=6.0) == 0.2  # not a configured region: stay
    assert r.current == "east"


def test_503_is_retried_in_place_a_few_times_then_counts_as_a_failure() -> None:
    r = route(max_busy=2)
    r.busy("east", 1.0)
    r.busy("east", 1.1)
    assert r.current == "east"
    r.busy("east", 1.2)
    assert r.current == "north" and r.recently_failed("east", 1.3)
    r.ok("east")
    assert not r.recently_failed("east", 1.3)


def test_when_every_region_failed_recently_the_customer_still_rotates() -> None:
    r = route()
    r.failed("east", 1.0)
    r.failed("north", 2.0)
    assert r.current == "east"


def test_turn_texts_are_unique_and_sessions_roll_over() -> None:
    texts = {turn_message(c, t, "run1")["text"] for c in range(5) for t in range(30)}
    assert len(texts) == 150
    assert turn_message(0, 1, "r")["intent"] == "inquire_order"
    assert turn_message(0, 2, "r")["slots"]["order_id"].startswith("A-")
    assert session_id("r", 3, 5, 6) == "drill-r-c3-s0" and session_id("r", 3, 6, 6) == "drill-r-c3-s1"


def test_document_ops_fill_the_pool_first_then_mix() -> None:
    rng = random.Random(1)
    assert next_doc_op(rng, [], 10) == "insert"
    ops = [next_doc_op(rng, [f"d{i}" for i in range(8)], 10) for _ in range(500)]
    assert {"update", "delete", "insert"} == set(ops)
    assert ops.count("update") > ops.count("delete")
    assert next_doc_op(rng, [f"d{i}" for i in range(10)], 10) in ("update", "delete")  # full: no insert
    marker, body = doc_body("r", 1, 2)
    assert marker in body and marker == "drill-r-d1-r2"


def test_region_workers_and_unknown_region() -> None:
    s = Settings()
    assert region_workers(s, "east") == ("milvus-east", "indexer-east", "dialog-east", "serve-east")
    with pytest.raises(BadInput, match="unknown region 'west'"):
        region_workers(s, "west")


def test_descendants_walks_the_process_tree(tmp_path: Path) -> None:
    tree = {10: 1, 11: 10, 12: 10, 13: 11, 20: 1}
    for pid, ppid in tree.items():
        (tmp_path / str(pid)).mkdir()
        (tmp_path / str(pid) / "stat").write_text(f"{pid} (a (weird) name) S {ppid} 1 1 0")
    (tmp_path / "self").mkdir()
    assert descendants(10, tmp_path) == [10, 11, 12, 13]
    assert parse_ppid("5 (x) R 4 5 5") == 4 and parse_ppid("garbage") is None
