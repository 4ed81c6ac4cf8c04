"""`regionsync drill` on the real stack: the whole active region killed (the source region: its
broker, object store, Postgres, CMS, Connect and change agent with it), then (the roles swapped)
the whole new active region frozen, each with 1-second probes and a small workload; the report
opened in headless Chromium; bad input refused before anything is touched.

No timing thresholds here (they depend on the machine: the README and docs/drills/ hold the
measured figures); what is asserted is correctness: the acknowledged turns lost are exactly the
ones the failback found not replicated (the asynchronous RPO, listed), every session equal to the
fold of the log, every region equal to the source at the end, and the times present.
"""

from __future__ import annotations

import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path

import orjson
import pytest
import requests

from drills import inject
from regionsync.settings import Settings

from .conftest import cli

pytestmark = pytest.mark.integration

SMALL = ["--probe-interval", "1", "--users", "4", "--think", "0.5", "--warmup", "5", "--after", "3",
         "--doc-rate", "1", "--search-rate", "2", "--seed", "7"]


def _drill(settings: Settings, out: Path, fail: str, mode: str) -> tuple[dict, subprocess.CompletedProcess[str]]:
    json_path, html_path = out / f"{mode}.json", out / f"{mode}.html"
    proc = cli(settings, "drill", "--fail", fail, "--mode", mode, *SMALL, "--json", str(json_path),
               "--report", str(html_path), timeout=900)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-5000:]
    return orjson.loads(json_path.read_bytes()), proc


def _roles(settings: Settings) -> dict[str, str]:
    return {r: requests.get(f"{settings.serve_url(r)}/readyz", timeout=30).json()["role"] for r in settings.regions}


def _assert_drill_held(report: dict, failed: str, new: str, mode: str) -> None:
    d, r = report["drill"], report["results"]
    assert (d["failed_region"], d["new_region"], d["mode"], d["scope"]) == (failed, new, mode, "region")
    assert report["fault"]["mode"] == mode and report["fault"]["pids"]
    # Customers were answered on both sides of the failure, and nothing they were told was lost.
    assert {region for c in report["customers"] for region in c["acks"]} == {failed, new}
    assert r["rpo"]["acknowledged_turns"] > 0
    lost = {(t["session_id"], t["turn"]) for t in r["rpo"]["missing_turns"]}
    unreplicated = {(t["session_id"], t["turn"]) for t in report["failback"]["unreplicated_turns"]}
    assert lost == unreplicated, (r["rpo"]["missing_turns"], report["failback"]["unreplicated_turns"])
    assert all(t["region"] == failed for t in r["rpo"]["missing_turns"])
    source_down = d["scope"] == "region" and d["failed_region"] == d["source_region"]
    assert r["rpo"]["doc_changes"] > 0
    if not source_down:  # with the CMS in the lost region, what it had not replicated arrives at failback
        assert r["rpo"]["docs_missing"] == 0, r["rpo"]["missing_docs"]
    s = r["sessions"]
    assert s["held"] > 0 and s["differing"] == [] and s["absent"] == [] and s["views_differing"] == []
    assert s["views_checked"] >= d["users"]
    # The times are measured (their size is the machine's business, see the README).
    rec = r["recovery"]
    for key in ("detection_s", "promotion_s", "rto_s", "failure_to_first_answer_s"):
        assert rec[key] is not None and rec[key] >= 0, key
    assert rec["last_good_failed"] < rec["first_good_new"]
    t = report["timeline"]
    assert t["fail_at"] <= t["detected_at"] <= t["promote_started_at"] <= t["promoted_at"]
    down = [x for x in report["transitions"] if x["region"] == failed and x["health"] == "down"]
    assert down and down[0]["misses"] == d["misses"]
    assert any(not p["ok"] for p in report["probes"] if p["region"] == failed and p["at"] >= t["fail_at"])
    assert r["customers"]["moved_share"] > 0
    assert r["search"]["drill"]["requests"] > 0 and r["search"]["drill"]["p99_ms"] is not None
    # After: the survivors matched the source, the failed region came back as a standby that
    # caught up, and every region equals the source.
    if source_down:
        assert "skipped" in report["reconcile"]["surviving"]
        assert report["knowledge"]["documents"] > 0
    else:
        assert report["reconcile"]["surviving"]["drift_found"] is False, report["reconcile"]["surviving"]["drifts"][:5]
    lag = report["replication"]["lag_at_failure"]
    assert lag["source"] == failed and lag["target"] == new and lag["dialog_lag_ms"] >= 0
    assert report["failback"]["caught_up"] is True and report["failback"]["role"] == "standby"
    assert report["failback"]["same_as_new_region"]["differing"] == []
    assert report["reconcile"]["final"]["drift_found"] is False, report["reconcile"]["final"]["drifts"][:5]
    assert report["verdict"]["ok"] is True


@pytest.fixture(scope="module")
def out_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("drill-reports")


@pytest.fixture(scope="module")
def kill_report(settings: Settings, out_dir: Path) -> Iterator[dict]:
    assert _roles(settings) == {"east": "active", "north": "standby"}
    report, proc = _drill(settings, out_dir, "east", "kill")
    assert settings.pg_password.get_secret_value() not in proc.stdout + proc.stderr
    assert "PASSED" in proc.stdout
    yield report


def test_drill_kill_mode_moves_every_customer_without_losing_a_turn(settings: Settings, kill_report: dict) -> None:
    _assert_drill_held(kill_report, "east", "north", "kill")
    assert _roles(settings) == {"east": "standby", "north": "active"}


def test_the_report_page_renders_in_headless_chromium(kill_report: dict, out_dir: Path) -> None:
    chromium = shutil.which("chromium")
    if chromium is None:
        pytest.fail("Debian's chromium is not installed: run scripts/setup.sh --test")
    page = (out_dir / "kill.html").resolve()
    flags = ["--headless", "--no-sandbox", "--disable-gpu", "--no-first-run", "--disable-background-networking",
             f"--user-data-dir={out_dir / 'chromium-profile'}"]
    dom = subprocess.run([chromium, *flags, "--dump-dom", page.as_uri()], capture_output=True, text=True, timeout=120)
    assert dom.returncode == 0, dom.stderr[-2000:]
    assert 'id="timeline"><svg' in dom.stdout and dom.stdout.count("<path") > 50  # the plot, as the browser parsed it
    assert "PASSED" in dom.stdout and "RTO" in dom.stdout
    shot = out_dir / "kill.png"
    run = subprocess.run([chromium, *flags, f"--screenshot={shot}", "--window-size=1300,1100", page.as_uri()],
                         capture_output=True, text=True, timeout=120)
    assert run.returncode == 0 and shot.stat().st_size > 20_000, run.stderr[-2000:]
    from PIL import Image

    with Image.open(shot) as img:
        # The timeline sits under the heading: that band of the screenshot holds the plot's colours.
        band = img.convert("RGB").crop((0, 200, 1300, 700))
        colours = band.getcolors(maxcolors=1 << 16) or []
    assert len(colours) > 50, "the timeline area of the screenshot is (nearly) blank"


def test_drill_freeze_mode_after_the_roles_swapped(settings: Settings, kill_report: dict, out_dir: Path) -> None:
    report, _proc = _drill(settings, out_dir, "north", "freeze")
    _assert_drill_held(report, "north", "east", "freeze")
    assert _roles(settings) == {"east": "active", "north": "standby"}


def _pids(settings: Settings) -> dict[str, int | None]:
    return {n: inject.main_pid(settings, n) for r in settings.regions
            for n in inject.region_workers(settings, r, inject.Scope.REGION)}


@pytest.mark.parametrize(
    ("args", "env", "words"),
    [
        (["--fail", "west"], {}, "unknown region 'west'"),
        (["--fail", "north"], {}, "region north is a standby"),
        (["--fail", "east", "--probe-interval", "0"], {}, "--probe-interval must be a positive"),
        (["--fail", "east", "--probe-interval", "1", "--probe-timeout", "3"], {}, "must not exceed --probe-interval"),
        (["--fail", "east", "--misses", "0"], {}, "--misses must be between 1 and 100"),
        (["--fail", "east"], {"regions": ["east"]}, "only region: there is no standby"),
    ],
)
def test_bad_input_is_refused_before_anything_is_touched(
    settings: Settings, kill_report: dict, args: list[str], env: dict, words: str
) -> None:
    # Runs after the drills (the roles are back to east active): nothing moves on bad input.
    s = settings.model_copy(update=env)
    before = _pids(settings)
    proc = cli(s, "drill", *args, timeout=120)
    assert proc.returncode == 2, proc.stdout + proc.stderr
    assert words in proc.stderr and "Traceback" not in proc.stderr
    assert _pids(settings) == before
    assert _roles(settings)["east"] == "active"


def test_no_standby_ready_is_refused(settings: Settings, kill_report: dict) -> None:
    """The only active region with its standby not answering: refused, nothing touched."""
    before = _pids(settings)
    inject.freeze(settings, ["serve-north"])
    try:
        proc = cli(settings, "drill", "--fail", "east", "--probe-interval", "1", timeout=120)
    finally:
        inject.thaw(settings, ["serve-north"])
    assert proc.returncode == 2, proc.stdout + proc.stderr
    assert "only active region and no standby is ready" in proc.stderr and "Traceback" not in proc.stderr
    assert _pids(settings) == before
    assert _roles(settings) == {"east": "active", "north": "standby"}
