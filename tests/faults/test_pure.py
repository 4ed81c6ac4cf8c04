"""Pure parts of the fault suite: trial plans from a seed, figures, the table, what a redelivery
is, which committed versions a region lost, the dialog's availability during a fault, which
secrets are looked for and where."""

from __future__ import annotations

import math
from pathlib import Path

import orjson
import pytest
from pydantic import SecretStr

from drills.errors import BadInput
from drills.faults import table
from drills.faults.availability import availability
from drills.faults.checks import EndState, SessionCheck, _still, lost_versions, version_held
from drills.faults.figures import bucket_delta, histogram_quantile, percentile, summarise
from drills.faults.model import TrialPlan, TrialResult
from drills.faults.plan import Timing, plan_trials
from drills.faults.registry import ORDER, build, describe
from drills.faults.runner import select, suite_settings
from drills.faults.scenario import result_of
from drills.faults.secrets_scan import secrets_of
from drills.faults.topics import change_identity
from drills.workload_model import DocChange, TurnAck, WorkloadConfig, WorkloadResult
from indexer.plan import DocState
from regionsync.settings import Settings


def test_plans_are_drawn_from_the_seed_within_the_ranges() -> None:
    timing = Timing(fault_after=(2.0, 8.0), fault=(60.0, 60.0), after=(1.0, 3.0))
    a = plan_trials("indexer-kill", 20, 7, timing, ["indexer-east", "indexer-north"])
    assert a == plan_trials("indexer-kill", 20, 7, timing, ["indexer-east", "indexer-north"])
    assert a != plan_trials("indexer-kill", 20, 8, timing, ["indexer-east", "indexer-north"])
    assert [p.index for p in a] == list(range(20))
    assert all(2.0 <= p.fault_after_s <= 8.0 and p.fault_s == 60.0 and 1.0 <= p.after_s <= 3.0 for p in a)
    assert {p.target for p in a} == {"indexer-east", "indexer-north"}
    # Another scenario's stream is its own: adding one does not move this one's moments.
    assert [p.fault_after_s for p in plan_trials("agent-kill", 3, 7, timing)] != [p.fault_after_s for p in a[:3]]
    assert plan_trials("agent-kill", 2, 7, timing)[0].target == ""


def test_percentiles_and_prometheus_style_histogram_quantiles() -> None:
    assert percentile([], 50) is None
    assert percentile([3.0, 1.0, 2.0], 50) == 2.0
    assert math.isclose(percentile([1.0, 2.0, 3.0, 4.0], 99) or 0, 3.97)
    buckets = {0.1: 10.0, 0.5: 90.0, 1.0: 99.0, 2.0: 100.0, math.inf: 100.0}
    assert math.isclose(histogram_quantile(0.5, buckets) or 0, 0.1 + 0.4 * 40 / 80)
    assert math.isclose(histogram_quantile(0.99, buckets) or 0, 1.0)
    assert histogram_quantile(0.99, {math.inf: 0.0}) is None
    assert histogram_quantile(0.99, {1.0: 0.0, math.inf: 5.0}) == 1.0  # beyond the last bound
    assert bucket_delta({1.0: 5.0, math.inf: 7.0}, {1.0: 2.0, math.inf: 3.0}) == {1.0: 3.0, math.inf: 4.0}
    assert bucket_delta({1.0: 1.0, math.inf: 1.0}, {1.0: 2.0, math.inf: 3.0}) == {1.0: 1.0, math.inf: 1.0}


def _result(i: int, lost: int = 0, stale: int = 0, converge: float | None = 5.0, **kw: object) -> TrialResult:
    return TrialResult(TrialPlan("x", i, i, 1.0, 1.0, 1.0), 1, lost, stale, 2, converge, **kw)  # type: ignore[arg-type]


def test_a_row_sums_the_trials_and_fails_on_any_loss_staleness_problem_or_timeout() -> None:
    ok = summarise("x", [_result(0, converge=2.0), _result(1, converge=4.0), _result(2, converge=9.0)])
    assert ok["trials"] == 3 and ok["faults"] == 3 and ok["duplicates"] == 6
    assert ok["converge_p50_s"] == 4.0 and ok["converge_max_s"] == 9.0 and ok["ok"]
    assert not summarise("x", [_result(0, lost=1)])["ok"]
    assert not summarise("x", [_result(0, stale=1)])["ok"]
    assert not summarise("x", [_result(0, converge=None)])["ok"]
    assert not summarise("x", [_result(0, problems=("secret leaked",))])["ok"]
    assert not summarise("x", [_result(0, error="boom")])["ok"]
    assert not summarise("x", [])["ok"]


def test_trial_results_round_trip_through_json() -> None:
    r = _result(3, lost=1, lost_detail=("d1",), notes={"p99": 0.4}, problems=("p",))
    assert TrialResult.from_dict(orjson.loads(orjson.dumps(r.to_dict()))) == r


def test_the_table_renders_every_row_and_says_what_failed(tmp_path: Path) -> None:
    results = {
        "seed": 11, "quick": True, "seconds": 300.0, "started": "2026-11-30T15:00:00+00:00",
        "machine": {"cpu": "EPYC", "cores": 2, "ram_gb": 24.0, "load_start": [1.0, 1.0, 1.0]},
        "workload": {"doc_rate": 2.0, "users": 3, "think_s": 1.0},
        "scenarios": [
            {"name": "agent-kill", "summary": summarise("agent-kill", [_result(0)]), "note": "", "trials": []},
            {"name": "region-loss", "summary": summarise("region-loss", [_result(0, lost=2, converge=None)]),
             "note": "dialog log lost", "trials": []},
        ],
    }
    text = table.render(results)
    assert "agent-kill" in text and "region-loss" in text and "FAILURES" in text and "did not" in text
    assert "EPYC, 2 cores" in text
    md = table.markdown(results)
    assert md.splitlines()[0].startswith("| scenario |") and md.count("\n| ") == 2  # two rows
    path = tmp_path / "r.json"
    table.save(results, path)
    assert table.load(path) == results and not table.all_ok(results)


def test_a_suite_that_lost_its_stack_says_so_and_is_not_ok() -> None:
    results = {
        "seed": 11, "quick": False, "seconds": 60.0, "started": "2026-11-30T15:00:00+00:00",
        "machine": {}, "workload": {},
        "scenarios": [{"name": "agent-kill", "summary": summarise("agent-kill", [_result(0)]), "note": "",
                       "trials": []}],
        "aborted": "postgres-restart trial 2: the stack could not be restarted: pg_ctl start failed",
        "not_run": ["region-loss"],
    }
    assert not table.all_ok(results)
    assert "ABORTED: postgres-restart trial 2" in table.render(results) and "not run: region-loss" in table.render(results)
    assert "ABORTED" in table.markdown(results)


def test_a_partial_run_saved_along_the_way_says_so_and_is_not_ok() -> None:
    results = {
        "seed": 11, "quick": False, "seconds": 60.0, "started": "2026-12-07T03:00:00+00:00",
        "machine": {}, "workload": {}, "partial": True,
        "scenarios": [{"name": "agent-kill", "summary": summarise("agent-kill", [_result(0)]), "note": "",
                       "trials": []}],
    }
    assert not table.all_ok(results) and "PARTIAL" in table.render(results)
    assert table.all_ok({k: v for k, v in results.items() if k != "partial"})


def test_a_redelivered_change_event_has_the_identity_of_the_first() -> None:
    value = orjson.dumps({"before": None, "after": {"id": "a"}, "op": "u", "source": {"lsn": 42}})
    assert change_identity(b'{"id":"a"}', value) == (b'{"id":"a"}', 42, "u")
    wrapped = orjson.dumps({"schema": {}, "payload": {"op": "d", "source": {"lsn": 7}}})
    assert change_identity(b"k", wrapped) == (b"k", 7, "d")
    assert change_identity(b"k", None) is None  # a tombstone repeats legitimately
    assert change_identity(b"k", orjson.dumps({"op": "r", "source": {"lsn": 1}})) is None  # a snapshot read
    assert change_identity(b"k", b"{not json") is None


def test_every_set_secret_is_looked_for_and_the_suite_makes_its_own_up() -> None:
    base = Settings(milvus_token=SecretStr(""), answer_llm_api_key=SecretStr("sk/with+chars"))
    found = secrets_of(base)
    assert "pg_password" in found and "milvus_token" not in found
    assert found["answer_llm_api_key (URL-encoded)"] == "sk%2Fwith%2Bchars"
    mine = suite_settings(base)
    for name in ("pg_password", "api_tokens", "s3_access_key_id", "s3_secret_access_key"):
        assert getattr(mine, name).get_secret_value() != getattr(base, name).get_secret_value()
        assert len(getattr(mine, name).get_secret_value()) >= 16


def _change(doc: str, op: str, lo: int) -> DocChange:
    return DocChange(doc, op, lo, lo + 10, float(lo), "" if op == "delete" else f"{doc}-{lo}")


def _held(version: int, deleted: bool = False) -> DocState:
    return DocState(version, None if deleted else "h", 0 if deleted else 2, deleted)


def test_every_committed_version_a_region_stops_short_of_is_lost_there() -> None:
    # d1: insert, two updates; east holds the newest, north stopped after the first update.
    changes = [_change("d1", "insert", 100), _change("d1", "update", 200), _change("d1", "update", 300)]
    lost = lost_versions(changes, {"east": {"d1": _held(305)}, "north": {"d1": _held(205)}})
    assert [(v.region, v.change.lsn_lo) for v in lost] == [("north", 300)]
    # Each version is counted, not the document: a region still at the insert lost both updates;
    # a region with no row of it lost all three.
    lost = lost_versions(changes, {"east": {"d1": _held(104)}, "north": {}})
    assert [(v.region, v.change.lsn_lo) for v in lost] == [("east", 200), ("east", 300),
                                                           ("north", 100), ("north", 200), ("north", 300)]
    assert str(lost[0]) == "d1 update at LSN 200..210 not applied in east, which holds version 104"
    assert "which holds no version of it" in str(lost[-1])


def test_a_superseded_version_is_not_lost_and_convergence_plays_no_part() -> None:
    # The region never held version 200 (the record of 300 replaced it before the region read
    # it): not lost. What the region holds is all that is looked at: no drift, no end check.
    changes = [_change("d1", "insert", 100), _change("d1", "update", 200), _change("d1", "update", 300)]
    assert lost_versions(changes, {"east": {"d1": _held(301)}}) == []
    # Order of the record does not matter: changes are taken in commit (LSN) order.
    assert lost_versions(list(reversed(changes)), {"east": {"d1": _held(205)}})[0].change.lsn_lo == 300


def test_a_delete_is_held_by_a_region_that_holds_the_document_absent() -> None:
    changes = [_change("d2", "insert", 100), _change("d2", "update", 200), _change("d2", "delete", 300)]
    # Deleted at the delete's version; never held at all (it jumped straight to the delete's
    # state); deleted by a tombstone or a repair's delete record at a lower version: nothing lost.
    for state in ({"d2": _held(300, deleted=True)}, {}, {"d2": _held(201, deleted=True)}):
        assert lost_versions(changes, {"east": state}) == [], state
    # Still holding the text of the update: the delete is lost, the versions before it are not.
    lost = lost_versions(changes, {"east": {"d2": _held(205)}})
    assert [(v.change.op, v.change.lsn_lo) for v in lost] == [("delete", 300)]
    # Still holding the insert: the update and the delete are lost.
    assert len(lost_versions(changes, {"east": {"d2": _held(100)}})) == 2
    # A re-insert after a delete is not held by absence.
    again = [*changes, _change("d2", "insert", 400)]
    assert [v.change.lsn_lo for v in lost_versions(again, {"east": {"d2": _held(300, deleted=True)}})] == [400]


def test_version_held_reads_the_change_window() -> None:
    change = _change("d", "update", 100)
    assert version_held(change, [], _held(100)) and version_held(change, [], _held(109))
    assert not version_held(change, [], _held(99)) and not version_held(change, [], None)
    assert not version_held(change, [], _held(99, deleted=True))  # deleted before the update: no later delete
    assert version_held(change, [_change("d", "delete", 200)], _held(99, deleted=True))


def test_availability_compares_the_fault_with_an_equal_window_before_it() -> None:
    # 2 turns/s before the fault, 0.5 turn/s during a 10 s fault.
    before = [90.0 + 0.5 * i for i in range(20)]  # 90.0 .. 99.5
    during = [100.0 + 2.0 * i for i in range(5)]  # 100, 102, ... 108
    seen = availability([*before, *during, 111.0], 100.0, 110.0, earliest=0.0)
    assert (seen.turns_before, seen.seconds_before, seen.turns_during, seen.seconds_during) == (20, 10.0, 5, 10.0)
    assert seen.ratio == pytest.approx(0.25)
    # A 60 s fault 4 s into the load: the window before is what there was, rates compared.
    short = availability([1.0, 2.0, 3.0, 3.5, 30.0], 4.0, 64.0, earliest=1.0)
    assert short.seconds_before == 3.0 and short.turns_before == 4 and short.turns_during == 1
    assert short.ratio == pytest.approx((1 / 60) / (4 / 3))
    assert availability([1.0], 5.0, 5.0, 0.0).ratio is None  # an instant fault: no window
    assert availability([6.0], 5.0, 8.0, 0.0).ratio is None  # nothing acknowledged before it
    assert availability([1.0, 6.0], 5.0, 8.0, 5.0).ratio is None  # no time before it
    assert availability([1.0, 4.0], 5.0, 8.0, 0.0).to_dict()["ratio"] == 0.0  # a stall: 0


def _ack(i: int, at: float) -> TurnAck:
    return TurnAck(0, "s", i, f"t{i}", "east", at - 0.1, at, i + 1, 1, 1)


def test_a_trial_result_carries_the_availability_of_its_fault_window() -> None:
    config = WorkloadConfig(regions=("east", "north"), start_region="east", think_s=1.0)
    acks = tuple(_ack(i, at) for i, at in enumerate([1000.5, 1001.5, 1002.5, 1003.5, 1004.5, 1009.0]))
    load = WorkloadResult(config, 1000.0, 1012.0, (), acks, (), (), (), ())
    end = EndState(True, 3.0, [], SessionCheck(), [])
    plan = TrialPlan("milvus-down", 0, 1, 5.0, 5.0, 1.0)
    result = result_of(plan, 1, end, 0, load, {}, fault_window=(1005.0, 1010.0))
    # Counted from 1001.0 (every customer talking): 4 turns in 4 s before, 1 in 5 s during.
    assert result.notes["availability"]["turns_before"] == 4 and result.notes["availability"]["seconds_before"] == 4.0
    assert result.availability == pytest.approx(0.2)
    assert result_of(plan, 1, end, 0, load, {}).availability is None  # no window: no figure
    assert TrialResult.from_dict(orjson.loads(orjson.dumps(result.to_dict()))) == result


def test_the_summary_and_table_give_the_availability_min_and_median() -> None:
    row = summarise("x", [_result(0, availability=0.1), _result(1, availability=0.9), _result(2, availability=0.5),
                          _result(3)])
    assert row["availability_min"] == 0.1 and row["availability_p50"] == 0.5 and row["ok"]
    results = {"scenarios": [{"name": "x", "summary": row, "note": "", "trials": []}], "machine": {}, "workload": {}}
    assert "turns/s in fault vs before" in table.render(results) and "0.10 / 0.50" in table.render(results)
    assert "| 0.10 / 0.50 |" in table.markdown(results)
    # A run saved before the column existed still renders, with "-".
    old = {k: v for k, v in row.items() if not k.startswith("availability")}
    assert "| - |" in table.markdown({**results, "scenarios": [{"name": "x", "summary": old, "note": ""}]})


def test_scenarios_are_known_by_name_in_the_suite_order() -> None:
    assert select([]) == list(ORDER)
    assert select(["secrets", "agent-kill"]) == ["agent-kill", "secrets"]
    with pytest.raises(BadInput, match="unknown scenario"):
        select(["no-such"])
    assert ORDER[-1] == "secrets"
    assert [name for name, _summary, _n in describe()] == list(ORDER)
    assert {n: t for n, _s, t in describe()}["agent-kill"] == 20
    assert build("connect-kill").full_trials == 10


def test_a_long_end_check_says_what_it_still_waits_for() -> None:
    waiting = SessionCheck(caught_up=False, differing=["north: s1"], lost_turns=["east: s2#3"])
    said = _still(["missing doc-7"], waiting, [], ["north"])
    assert said == ("drift missing doc-7; session north: s1; turn east: s2#3; north unread; "
                    "sessions not caught up")
    assert _still([], SessionCheck(), [], []) == "nothing"


def test_a_run_made_in_parts_is_one_table_where_a_later_part_supersedes_a_scenario() -> None:
    def part(commit: str, partial: bool, *rows: tuple[str, int]) -> dict[str, object]:
        return {"commit": commit * 40, "seed": 11, "seconds": 60.0, "machine": {}, "workload": {},
                "partial": partial,
                "scenarios": [{"name": n, "summary": summarise(n, [_result(0, lost=lost)]), "note": "", "trials": []}
                              for n, lost in rows]}

    first = part("a", True, ("agent-kill", 0), ("milvus-down", 1))  # stopped: the broker slowed down
    second = part("b", False, ("milvus-down", 0), ("region-loss", 0))
    both = table.combine([first, second])
    assert [r[0] for r in table.rows(both)] == ["agent-kill", "milvus-down", "region-loss"]
    assert [r[3] for r in table.rows(both)] == ["0", "0", "0"]  # milvus-down: the second part's row
    assert [r[-1] for r in table.rows(both)] == ["at aaaaaaa", "at bbbbbbb", "at bbbbbbb"]
    assert table.all_ok(both) and not table.all_ok(table.combine([second, first]))
    md = table.markdown(both)
    assert "part 1 (commit aaaaaaa, stopped)" in md and "part 2 (commit bbbbbbb)" in md
