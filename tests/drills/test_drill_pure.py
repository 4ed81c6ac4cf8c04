"""The failover drill's pure parts: the GSLB state machine, the measurements from recorded
timelines, the report model and page, and the checks of the drill's options (no stack)."""

from __future__ import annotations

import dataclasses

import pytest

from dialog.state import SessionState, Turn
from drills import measure, report
from drills.errors import BadInput
from drills.failover import DrillOptions, check_options
from drills.gslb import Health, HealthState, ProbeResult, replay
from drills.inject import Mode
from drills.workload_model import DocChange, Outage, SearchSample, TurnAck
from indexer.plan import DocState
from regionsync.settings import Settings


def probe(region: str, at: float, ok: bool) -> ProbeResult:
    return ProbeResult(region, at, at + 0.01, ok, 200 if ok else None, "ready" if ok else "refused")


# ---------------------------------------------------------------------------- GSLB


def test_failure_is_declared_after_the_given_misses_in_a_row_and_a_good_answer_resets() -> None:
    s = HealthState("east", 3)
    assert s.observe(probe("east", 0, True)) is None
    assert s.observe(probe("east", 10, False)) is None
    assert s.observe(probe("east", 20, False)) is None
    assert s.observe(probe("east", 30, True)) is None  # reset: the next run starts again
    assert s.observe(probe("east", 40, False)) is None
    assert s.observe(probe("east", 50, False)) is None
    t = s.observe(probe("east", 60, False))
    assert t is not None and t.health is Health.DOWN and t.misses == 3
    assert t.first_miss_at == 40 and t.at == pytest.approx(60.01)
    assert s.observe(probe("east", 70, False)) is None  # declared once
    up = s.observe(probe("east", 80, True))
    assert up is not None and up.health is Health.UP


def test_replay_orders_results_and_keeps_regions_apart() -> None:
    results = [probe("east", t, t < 3) for t in range(6)] + [probe("north", t, True) for t in range(6)]
    out = replay(list(reversed(results)), 2)
    assert [(t.region, t.health) for t in out] == [("east", Health.DOWN)]
    assert out[0].first_miss_at == 3
    with pytest.raises(ValueError):
        HealthState("east", 0)
    with pytest.raises(ValueError):
        HealthState("east", 1).observe(probe("north", 0, True))


# ---------------------------------------------------------------------------- measurements


def ack(customer: int, region: str, at: float, text: str = "hi", last_seq: int = 4, events: int = 3,
        session: str = "s1") -> TurnAck:
    return TurnAck(customer, session, 0, text, region, at - 0.1, at, last_seq, events, 1)


def test_rto_runs_from_the_last_answer_of_the_failed_region_to_the_first_of_the_new() -> None:
    acks = [ack(0, "east", 98.0), ack(1, "east", 99.5), ack(0, "north", 104.0), ack(1, "north", 103.2)]
    rec = measure.recovery(acks, "east", "north", fail_at=100.0, detected_at=102.5, promote_started_at=102.6,
                           promoted_at=103.0)
    assert rec.last_good_failed == 99.5 and rec.first_good_new == 103.2
    assert rec.rto_s == pytest.approx(3.7)
    assert rec.detection_s == pytest.approx(2.5) and rec.promotion_s == pytest.approx(0.4)
    assert rec.failure_to_first_answer_s == pytest.approx(3.2)
    none = measure.recovery([ack(0, "east", 98.0)], "east", "north", 100.0, None, None, None)
    assert none.rto_s is None and none.detection_s is None


def test_customers_outages_and_the_share_moved_within_a_minute() -> None:
    acks = [ack(0, "north", 105.0), ack(1, "north", 170.0)]  # customer 2 never moved
    outages = [
        Outage(0, 99.0, 105.0, "east", "north", 4),  # started before the failure: counted from it
        Outage(1, 101.0, 170.0, "east", "north", 9),
        Outage(2, 101.0, None, "east", None, 30),  # still waiting at the end
        Outage(0, 20.0, 21.0, "east", "east", 2),  # long before: not this failure's
    ]
    c = measure.customers(3, acks, outages, "north", fail_at=100.0, end=180.0)
    by = {x.customer: x for x in c.customers}
    assert by[0].outage_s == pytest.approx(5.0) and by[0].moved_after_s == pytest.approx(5.0)
    assert by[1].outage_s == pytest.approx(69.0) and by[1].moved_after_s == pytest.approx(70.0)
    assert by[2].outage_s == pytest.approx(79.0) and by[2].moved_after_s is None
    assert c.moved_share == pytest.approx(1 / 3)
    assert c.outage_max_s == pytest.approx(79.0)


def state(sid: str, last_seq: int, user_turns: list[tuple[int, str]]) -> SessionState:
    return SessionState(session_id=sid, last_seq=last_seq,
                        turns=tuple(Turn(seq, "user", text, 0) for seq, text in user_turns))


def test_an_acknowledged_turn_is_lost_unless_its_message_is_held_at_its_sequence() -> None:
    acks = [ack(0, "east", 1.0, "first", last_seq=4, events=4), ack(0, "north", 2.0, "second", last_seq=7, events=3),
            ack(1, "east", 1.5, "other", last_seq=4, events=4, session="s2")]
    held = {"s1": state("s1", 7, [(2, "first"), (5, "second")])}
    loss = measure.lost_turns(acks, held)
    assert loss.acknowledged == 3
    assert [m["session_id"] for m in loss.missing] == ["s2"]
    # Held only up to an older sequence: lost too.
    loss = measure.lost_turns(acks[:2], {"s1": state("s1", 6, [(2, "first"), (5, "second")])})
    assert [m["turn"] for m in loss.missing] == [0] and loss.missing[0]["held_last_seq"] == 6


def test_a_turn_replicated_only_in_part_is_lost_though_the_session_went_on() -> None:
    # Turn "second" (seqs 5..7) crossed with its message only; the new region's next turn ("third")
    # took seq 6 on: the session reached seq 7, but the turn is not held whole.
    acks = [ack(0, "north", 2.0, "second", last_seq=7, events=3)]
    partly = {"s1": state("s1", 9, [(2, "first"), (5, "second"), (6, "third")])}
    assert [m["turn"] for m in measure.lost_turns(acks, partly).missing] == [0]
    assert not measure.turn_held(partly["s1"], acks[0])
    whole = {"s1": state("s1", 9, [(2, "first"), (5, "second"), (8, "third")])}
    assert measure.lost_turns(acks, whole).missing == ()


def change(doc: str, op: str, lo: int) -> DocChange:
    return DocChange(doc, op, lo, lo + 10, 0.0, "" if op == "delete" else f"m{lo}")


def test_documents_missing_their_newest_committed_change() -> None:
    changes = [change("a", "insert", 100), change("a", "update", 200), change("b", "insert", 150),
               change("b", "delete", 300), change("c", "insert", 400), change("d", "insert", 500)]
    states = {
        "a": DocState(205, "h", 1, False),  # the update (or newer): held
        "b": DocState(150, "h", 1, False),  # the delete did not arrive: missing
        "c": DocState(399, "h", 1, False),  # older than the insert's position: missing
    }  # d: absent, missing
    loss = measure.lost_documents(changes, states)
    assert loss.changes == 6 and loss.documents == 4
    assert [m["doc_id"] for m in loss.missing] == ["b", "c", "d"]
    assert measure.change_held(change("b", "delete", 300), None)
    assert measure.change_held(change("b", "delete", 300), DocState(310, None, 0, True))


def test_sessions_compared_with_the_fold() -> None:
    a, b = state("a", 2, [(1, "x")]), state("b", 3, [(1, "y")])
    check = measure.compare_sessions({"a": a, "b": dataclasses.replace(b, last_seq=2)}, {"a": a, "b": b, "c": a})
    assert check.differing == ("b",) and check.absent == ("c",) and check.sessions == 2 and check.folded == 3


def test_search_stats_error_rate_and_percentiles() -> None:
    samples = [SearchSample(float(i), "east", i % 10 != 0, 0.010 + i / 1000, "ok") for i in range(100)]
    s = measure.search_stats(samples)
    assert s.requests == 100 and s.errors == 10 and s.error_rate == pytest.approx(0.1)
    assert s.p50_ms is not None and s.p99_ms is not None and s.p50_ms < s.p99_ms
    window = measure.search_stats(samples, 10.0, 19.0)
    assert window.requests == 10 and window.errors == 1
    assert measure.percentile([], 99) is None and measure.percentile([5.0], 99) == 5.0
    assert measure.percentile([float(i) for i in range(1, 101)], 99) == 99.0


# ---------------------------------------------------------------------------- report


def model(rto: float = 4.0, lost: int = 0, interval: float = 1.0, final_drift: bool = False,
          listed: int | None = None, ack_mode: str = "local", scope: str = "region", cited: int = 5) -> dict:
    """A drill's report model: ``lost`` acknowledged turns missing in the new region, ``listed``
    of them found set aside at the failback (default: all of them)."""
    fail = 1000.0
    missing = [{"session_id": f"s{i}", "turn": i, "region": "east", "last_seq": 9, "held_last_seq": 4}
               for i in range(lost)]
    unreplicated = [{"session_id": f"s{i}", "turn": i, "region": "east", "last_seq": 9, "fenced_seqs": [5],
                     "acked_at": fail - 0.1} for i in range(lost if listed is None else listed)]
    return {
        "commit": "0123456789abcdef",
        "drill": {"failed_region": "east", "new_region": "north", "mode": "kill", "regions": ["east", "north"],
                  "scope": scope, "source_region": "east", "ack_mode": ack_mode,
                  "probe_interval_s": interval, "probe_timeout_s": 1.0, "misses": 3, "users": 2, "think_s": 1.0,
                  "doc_rate": 1.0, "search_rate": 2.0, "run_id": "r1", "fail_phase_s": 0.4},
        "machine": {"description": "test machine"},
        "timeline": {"started_at": fail - 10, "fail_at": fail, "fault_done_at": fail + 0.1,
                     "detected_at": fail + 3, "promote_started_at": fail + 3.1, "promoted_at": fail + 3.5,
                     "last_good_failed": fail - 0.5, "first_good_new": fail - 0.5 + rto, "stopped_at": fail + 20},
        "results": {
            "recovery": {"rto_s": rto, "detection_s": 3.0, "promotion_s": 0.4, "failure_to_first_answer_s": rto - 0.5},
            "customers": {"moved_within_s": 60.0, "moved_share": 1.0, "outage_p50_s": 3.0, "outage_max_s": 4.0},
            "rpo": {"acknowledged_turns": 50, "turns_lost": lost, "missing_turns": missing, "doc_changes": 20,
                    "docs_missing": 0, "docs_complete_after_s": 0.5},
            "sessions": {"held": 9, "folded": 9, "differing": [], "absent": [], "views_differing": []},
            "search": {"drill": {"requests": 40, "errors": 2, "error_rate": 0.05, "p50_ms": 12.0, "p99_ms": 80.0},
                       "outage": {"requests": 8, "errors": 2, "error_rate": 0.25, "p50_ms": 12.0, "p99_ms": 80.0},
                       "new_region_cited_after_failure": cited},
        },
        "replication": {"lag_at_failure": {"source": "east", "target": "north", "dialog_lag_records": lost,
                                           "dialog_lag_ms": 40.0}, "ack_mode": ack_mode},
        "knowledge": {"region": "north", "documents": 300, "newest_version": 123456, "read_at": fail + 4},
        "reconcile": {
            "surviving": {"skipped": "the source region east is down: compared at the end"},
            "final": {"regions": ["east", "north"], "counts": {"east": {"missing": 1 if final_drift else 0}},
                      "drift_found": final_drift, "remaining": [], "seconds": 2.0},
        },
        "failback": {"seconds": 12.0, "role": "standby", "caught_up": True, "conflicts": [{"seq": 5}] * lost,
                     "unreplicated_turns": unreplicated},
        "customers": [
            {"customer": 0, "outage_s": 3.0, "moved_after_s": 3.5, "intervals": [[fail + 0.2, fail + 3.5]],
             "acks": {"east": [fail - 5, fail - 0.5], "north": [fail + 3.5, fail + 5]}},
            {"customer": 1, "outage_s": 4.0, "moved_after_s": None, "intervals": [[fail + 0.1, None]],
             "acks": {"east": [fail - 3]}},
        ],
        "probes": [{"region": r, "at": fail + t - 0.01, "done_at": fail + t, "ok": r == "north" or t < 0}
                   for r in ("east", "north") for t in range(-9, 20)],
        "searches": [{"at": fail + t, "ok": t not in (1, 2)} for t in range(-9, 20)],
    }


def test_targets_and_verdict() -> None:
    m = model()
    m["verdict"] = report.verdict(m)
    assert m["verdict"] == {"ok": True, "failed": [], "timing_missed": []}
    by = {t["name"]: t for t in report.targets(m)}
    rto = next(t for name, t in by.items() if name.startswith("RTO"))
    assert rto["target"] == "<= 6 s" and rto["met"] is True
    slow = model(rto=7.5)
    assert report.verdict(slow)["ok"] is True and report.verdict(slow)["timing_missed"][0].startswith("RTO")
    # Asynchronous replication: the turns lost must be exactly the ones listed as not replicated.
    assert report.verdict(model(lost=2))["ok"] is True
    assert report.verdict(model(lost=2, listed=1))["failed"] == ["acknowledged turns lost = turns listed as not replicated"]
    assert report.verdict(model(lost=0, listed=1))["ok"] is False  # listed but held: never silent either way
    # Mirrored acknowledgements: none may be lost.
    assert report.verdict(model(lost=1, ack_mode="mirrored"))["failed"] == ["acknowledged turns lost"]
    assert report.verdict(model(final_drift=True))["failed"] == ["regions equal to the source at the end"]
    assert report.verdict(model(cited=0))["failed"] == ["north answered searches with sources after the failure"]
    odd = model(interval=5.0)
    assert next(t for t in report.targets(odd) if t["name"].startswith("RTO"))["met"] is None
    assert report.rto_target(10, 3) == 35.0


def test_the_page_has_the_timeline_and_the_figures() -> None:
    m = model()
    m["verdict"] = report.verdict(m)
    page = report.html(m)
    assert page.startswith("<!doctype html>") and "<?xml" not in page
    assert "<div id='timeline'><svg" in page and page.count("<path") > 50
    assert "PASSED" in page and "RTO" in page and "test machine" in page
    assert "Scope: region" in page and "0123456789ab" in page and "300 documents" in page
    assert "\n".join(report.summary_lines(m)).endswith("PASSED")


def test_the_markdown_table_is_printed_from_the_saved_reports() -> None:
    m = model()
    m["verdict"] = report.verdict(m)
    rec = m["results"]["recovery"]
    rows = report.markdown_table([("run-a", m), ("run-b", m)])
    assert len(rows) == 4 and rows[0].count("|") == rows[2].count("|") == len(report.TABLE_HEAD) + 1
    assert rows[2].startswith("| run-a: region scope, kill, ") and rows[3].startswith("| run-b: ")
    assert f"**{rec['rto_s']:.2f} s**" in rows[2]
    rpo = m["results"]["rpo"]
    assert f"{rpo['acknowledged_turns']} / **{rpo['turns_lost']}**" in rows[2]


# ---------------------------------------------------------------------------- options


@pytest.mark.parametrize(
    ("change", "words"),
    [
        ({"fail": "west"}, "unknown region 'west'"),
        ({"probe_interval_s": 0.0}, "--probe-interval must be a positive"),
        ({"probe_interval_s": float("nan")}, "--probe-interval must be a positive"),
        ({"probe_interval_s": -1.0}, "--probe-interval must be a positive"),
        ({"probe_interval_s": 1.0, "probe_timeout_s": 2.0}, "must not exceed --probe-interval"),
        ({"misses": 0}, "--misses must be between 1 and 100"),
        ({"users": 0}, "--users must be between 1 and 500"),
        ({"doc_rate": -1.0}, "--doc-rate must be between 0 and 100"),
        ({"warmup_s": 0.0}, "--warmup must be a positive"),
    ],
)
def test_bad_options_are_refused_with_a_clear_message(change: dict, words: str) -> None:
    opts = dataclasses.replace(DrillOptions(fail="east", mode=Mode.KILL), **change)
    with pytest.raises(BadInput, match=words.replace("(", r"\(")):
        check_options(Settings(), opts)


def test_a_single_region_has_no_standby() -> None:
    with pytest.raises(BadInput, match="only region: there is no standby"):
        check_options(Settings(regions=["east"]), DrillOptions(fail="east"))
    check_options(Settings(), DrillOptions(fail="north", probe_interval_s=1.0))
