"""deploy/prometheus/: the alert rules (promtool check + unit tests) and the scrape config of the
embedded stack, which is the one stack/prometheus.py renders for the default settings.
The compose files are tests/deploy/test_compose.py's."""

from __future__ import annotations

import shutil
import subprocess

import pytest
import yaml

from regionsync.settings import Settings
from stack import prometheus
from tests.deploy.files import PROM, jobs

PROMTOOL = shutil.which("promtool")


@pytest.mark.parametrize("args", [["check", "rules", "alerts.yml"], ["test", "rules", "alerts_test.yml"],
                                  ["check", "config", "prometheus.yml"], ["check", "config", "compose.yml"]])
def test_promtool(args: list[str]) -> None:
    # Not skipped when missing: the rules would go untested silently. setup.sh installs it.
    assert PROMTOOL is not None, "promtool missing: scripts/setup.sh installs Debian's prometheus package"
    out = subprocess.run([str(PROMTOOL), *args], cwd=PROM, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stdout + out.stderr


def test_the_static_scrape_config_is_the_one_rendered_for_default_settings() -> None:
    static = yaml.safe_load((PROM / "prometheus.yml").read_text())
    rendered = prometheus.config(Settings())
    assert jobs(static) == jobs(rendered)
    assert static["global"] == rendered["global"]
    assert static["rule_files"] == ["alerts.yml"]


def test_every_replication_alert_reads_metrics_the_replicator_exports() -> None:
    from mirror import metrics

    exported = {m._name for m in (metrics.LAG_SECONDS, metrics.SOURCE_UP)}  # the metric family names
    rules = {r["alert"]: r for g in yaml.safe_load((PROM / "alerts.yml").read_text())["groups"] for r in g["rules"]}
    assert "regionsync_mirror_lag_seconds" in exported and "regionsync_mirror_source_up" in exported
    assert "regionsync_mirror_lag_seconds" in rules["ReplicationLagHigh"]["expr"]
    assert "regionsync_mirror_source_up" in rules["ReplicationSourceUnreachable"]["expr"]
    # The replicators' job name is the one the rendered config gives them.
    assert 'job="regionsync-mirror"' in rules["ReplicatorDown"]["expr"]
    assert "regionsync-mirror" in prometheus.targets(Settings())
