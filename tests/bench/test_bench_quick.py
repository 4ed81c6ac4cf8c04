"""``regionsync bench --quick`` keeps working: one real run on a tiny corpus (every row present,
numbers sane), plus the pieces that need no stack. Timing targets are not asserted: they are
goals the bench measures against, and this machine is shared."""

from __future__ import annotations

import math
import os
from pathlib import Path

import pytest

from bench import report, rss
from bench.profiling import summarize
from bench.stackrun import bench_settings
from cli import main as cli
from regionsync.settings import Settings


@pytest.mark.integration
def test_quick_bench_prints_every_row_and_saves_the_json(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "bench.json"
    code = cli.main(["bench", "--quick", "--docs", "40", "--freshness-seconds", "4", "--dialog-sessions", "200",
                     "--json", str(out)])
    assert code == 0
    printed = capsys.readouterr().out
    for row in report.ROWS:
        assert f"\n{row} " in printed, f"row {row} missing from:\n{printed}"
    assert "not available" not in printed  # the peer and the dialog rebuild both ran

    r = report.load(out)
    assert r["corpus"]["docs"] == 40 and r["corpus"]["chunks"] >= 40
    assert r["embed_limit"]["passages_per_s"] > 0
    changed = r["changed"]
    assert changed["docs"] == 40 and changed["docs_per_s"] > 0 and changed["embedded"] > 0
    assert changed["ratio_to_limit"] > 0 and set(changed["region_seconds"]) == set(r["settings"]["regions"])
    for phase in ("unchanged", "deletes"):
        assert r[phase]["docs"] == 40 and r[phase]["docs_per_s"] > 0
        assert r[phase]["embedded"] == 0 and r[phase]["cache_rows_added"] == 0  # nothing re-embedded
    fresh = r["freshness"]
    assert fresh["changes"] >= 1 and fresh["not_seen"] == 0 and 0 < fresh["p50_ms"] <= fresh["p99_ms"]
    peer = r["peer"]
    assert peer["available"] and [run["fraction"] for run in peer["runs"]] == [0.001, 0.01]
    for run in peer["runs"]:
        assert run["checked"], run["problems"]
        assert run["ours_s"] > 0 and run["theirs_s"] > 0 and run["speedup"] > 0
        assert run["theirs"]["result"]["num_added"] >= run["changed_passages"] > 0
    assert peer["seed"]["served_from_cache"] > 0
    search = r["search"]
    assert set(search["regions"]) == set(r["settings"]["regions"])
    for figures in search["regions"].values():
        assert figures["searches"] > 0 and figures["empty_results"] == 0 and figures["rows"] > 0
        assert 0 < figures["p50_ms"] <= figures["p99_ms"]
    http = r["http_search"]  # row 9: the same queries through each region's running service
    assert set(http["regions"]) == set(r["settings"]["regions"]) and http["k"] == search["k"]
    for region, figures in http["regions"].items():
        assert figures["searches"] == search["regions"][region]["searches"] and figures["empty_results"] == 0
        assert 0 < figures["p50_ms"] <= figures["p99_ms"]
    dialog = r["dialog"]
    assert dialog is not None and dialog["full_replay_events_per_s"] > 0 and dialog["restore_total_s"] > 0
    links = r["links"]  # row 11: the same records read directly and through the region's mutual-TLS edge
    assert "\n11 " in printed and links["records"] > 0 and links["edge_over_direct"] > 0
    assert links["direct"]["records_per_s"] > 0 and links["edge"]["records_per_s"] > 0
    services = r["rss"]["services"]
    regions = r["settings"]["regions"]
    # Every process of every region (named as the stack names them), the source's Connect and agent.
    per_region = ("seaweed", "postgres", "broker", "edge", "milvus", "indexer", "dialog", "serve")
    expected = {"connect", "changes", *(f"{kind}-{region}" for region in regions for kind in per_region),
                *(f"mirror-{a}-{b}" for a in regions for b in regions if a != b)}
    assert expected <= set(services), expected - set(services)
    assert all(v["peak_bytes"] > 0 for v in services.values())
    assert r["rss"]["stack_total_bytes"] == sum(v["peak_bytes"] for v in services.values())

    # A saved run renders again, as text and as Markdown.
    assert cli.main(["bench", "--show", str(out), "--markdown"]) == 0
    md = capsys.readouterr().out
    assert md.count("\n|") >= len(report.ROWS) + 1


def test_rss_of_a_process_tree_and_of_this_process(tmp_path: Path) -> None:
    run = tmp_path / "run"
    run.mkdir()
    (run / "me.pid").write_text(str(os.getpid()))
    sampler = rss.RssSampler(tmp_path, interval_s=0.05).start()
    peaks = sampler.stop()
    assert peaks["me"].peak_bytes > 10 * 1024**2
    assert rss.self_peak_bytes() >= peaks["me"].peak_bytes // 2


def test_the_bench_stack_moves_every_regions_ports_and_keeps_the_users_other_settings(tmp_path: Path) -> None:
    base = Settings(regions=["east", "north"], chunk_size=123, serve_urls={"east": "http://elsewhere:80"})
    s = bench_settings(base, tmp_path / "state")
    assert s.chunk_size == 123 and s.regions == base.regions and s.state_dir == (tmp_path / "state").resolve()
    assert s.serve_url("east") == f"http://127.0.0.1:{s.serve_base_port}"  # its own services, not the user's
    for name in ("kafka_bootstraps", "pg_addresses", "s3_endpoints", "milvus_uris"):
        ours, users = getattr(s, name), getattr(base, name)
        assert set(ours) == {"east", "north"} and len(set(ours.values())) == 2, name
        assert not set(ours.values()) & set(users.values()), name
    north = s.for_region("north")  # what every worker of a region is given
    assert (north.kafka_bootstrap, f"{north.pg_host}:{north.pg_port}", north.s3_endpoint) == (
        s.kafka_bootstraps["north"], s.pg_addresses["north"], s.s3_endpoints["north"])
    assert s.source() == s


def test_stack_pids_name_every_regions_postgres_beside_the_pid_files(tmp_path: Path) -> None:
    (tmp_path / "run").mkdir()
    (tmp_path / "run" / "broker-east.pid").write_text("101")
    for region, pid in (("east", 202), ("north", 303)):
        (tmp_path / "pg" / region).mkdir(parents=True)
        (tmp_path / "pg" / region / "postmaster.pid").write_text(f"{pid}\n/data\n")
    assert rss.stack_pids(tmp_path) == {"broker-east": 101, "postgres-east": 202, "postgres-north": 303}


def test_profile_summary_reads_py_spy_raw_stacks(tmp_path: Path) -> None:
    raw = tmp_path / "p.txt"
    raw.write_text("main (app.py);embed (embedder.py) 30\nmain (app.py);apply (sink.py) 10\n")
    summary = summarize(raw, seconds=1.0, rate=50)
    assert summary["samples"] == 40 and math.isclose(summary["busy_threads"], 0.8)
    assert summary["top_self_pct"][0] == ["embed (embedder.py)", 75.0]
    assert summary["top_inclusive_pct"][0] == ["main (app.py)", 100.0]
