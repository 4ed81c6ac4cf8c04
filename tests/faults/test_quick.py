"""``regionsync faults --quick`` on a real embedded stack of its own: one trial of every scenario
under the live workload. Every row must say 0 lost, 0 stale, converged, no problem; a whole region
lost and two regions writing at once must end with every region equal and the turns the
promotion set aside listed (never silently lost); a cut link must show a growing lag and catch up;
the storm must dead-letter every hostile event with a fitting reason and crash nothing; no secret
in any file under the state dir, any output or Connect's REST answers (the connector config names
the CMS database password as ``${env:CMS_PG_PASSWORD}``, which Connect resolves from its own
environment, so its answers about the connector never hold the password)."""

from __future__ import annotations

from pathlib import Path

import pytest

from cli import main as cli
from drills.faults import table
from drills.faults.registry import ORDER

pytestmark = pytest.mark.integration


@pytest.mark.timeout(1800)  # thirteen scenarios on a stack of its own: about 11 min on 2 cores
def test_quick_fault_suite_loses_nothing_and_says_so(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "faults.json"
    # A trial converges in seconds (20 s at most seen on a loaded 2-core machine); 150 s is room for a
    # slow one, and a trial that never converges fails the test with its reason, not the timeout.
    code = cli.main(["faults", "--quick", "--json", str(out), "--seed", "5", "--converge-timeout", "150"])
    captured = capsys.readouterr()
    printed = captured.out
    # The per-trial lines (stderr): the failure messages below carry their end.
    trials_said = "\n".join(line for line in captured.err.splitlines() if line.startswith("faults: "))[-4000:]
    results = table.load(out)
    rows = {sc["name"]: sc for sc in results["scenarios"]}
    assert list(rows) == list(ORDER), trials_said
    secrets = rows["secrets"]["trials"][0]
    assert secrets["notes"]["found"] == [] and list(secrets["problems"]) == [], secrets["notes"]["found"]
    failures = {name: (sc["summary"], [t for t in sc["trials"] if t["lost"] or t["stale"] or t["problems"]
                                       or t["error"] or t["converge_s"] is None][:1])
                for name, sc in rows.items() if not sc["summary"]["ok"]}
    assert not failures, f"{failures}\n{trials_said}"
    assert code == 0 and "FAILURES" not in printed
    for name, sc in rows.items():
        assert sc["summary"]["trials"] >= 1 and name in printed
        if name != "secrets":
            assert sc["summary"]["faults"] >= 1
            assert all(t["notes"].get("doc_changes", 0) > 0 for t in sc["trials"]), name  # under load
    assert sum(t["notes"].get("turns_acked", 0) for sc in rows.values() for t in sc["trials"]) > 0
    # The availability column: a figure wherever a fault had a window and turns came before it.
    assert all("availability_min" in sc["summary"] for sc in rows.values())
    assert any(t.get("availability") is not None for sc in rows.values() for t in sc["trials"])
    assert "turns/s in fault vs before" in printed

    region = rows["region-loss"]["trials"][0]["notes"]
    assert region["failed"] == "east" and region["promoted"] == "north" and region["replicated_again"] is True
    split = rows["split-brain"]["trials"][0]["notes"]
    assert split["replicated_again"] is True and split["turns_acked_by_old_after_promotion"] >= 1
    # Every turn the cut-off region took after the promotion is set aside (and listed), none lost. (A
    # turn acknowledged between the pause and the promotion may have crossed in a batch read before
    # the replicator noticed the pause: not a conflict then.)
    assert split["turns_set_aside"] >= split["turns_acked_by_old_after_promotion"]
    cut = rows["link-cut"]["trials"][0]["notes"]["lag_at_end_of_cut"]
    assert max(v["seconds"] for v in cut.values()) >= 3.0  # the lag grew while the link was cut

    storm = rows["poison-storm"]["trials"][0]["notes"]
    assert storm["hostile"] >= 300 and storm["misfiled"] == 0 and storm["crashed_or_restarted"] == []
    assert storm["hostile_by_kind"].get("cms:ten_mb_document") == storm["hostile_by_kind"].get("cdc:ten_mb_document") == 1

    notes = secrets["notes"]
    assert notes["files_scanned"] >= 8 and len(notes["secrets"]) >= 4
    assert {"connect/worker.properties", "connect/log4j2.properties"} <= set(notes["files"])
    assert notes["connect_answers_scanned"] >= 5 and {"pg/east", "seaweed/east"} <= set(notes["not_scanned"])

    assert cli.main(["faults", "--show", str(out), "--markdown"]) == 0
    assert "| region-loss |" in capsys.readouterr().out


def test_bad_input_fails_before_a_stack_is_started(capsys: pytest.CaptureFixture[str]) -> None:
    assert cli.main(["faults", "--scenario", "no-such-fault"]) == 2
    assert "unknown scenario" in capsys.readouterr().err
    assert cli.main(["faults", "--trials", "0"]) == 2
