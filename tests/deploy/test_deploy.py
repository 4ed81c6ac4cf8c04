"""deploy/: the alert rules (promtool), the Prometheus configs and docker-compose.yml agree with
the settings object."""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

from regionsync.settings import Settings
from regionsync.stack import prometheus, stack

ROOT = Path(__file__).resolve().parents[2]
PROM = ROOT / "deploy" / "prometheus"
PROMTOOL = shutil.which("promtool")


@pytest.mark.parametrize("args", [["check", "rules", "alerts.yml"], ["test", "rules", "alerts_test.yml"],
                                  ["check", "config", "prometheus.yml"], ["check", "config", "compose.yml"]])
def test_promtool(args: list[str]) -> None:
    # Not skipped when missing: the rules would go untested silently. setup.sh installs it.
    assert PROMTOOL is not None, "promtool missing: scripts/setup.sh installs Debian's prometheus package"
    out = subprocess.run([str(PROMTOOL), *args], cwd=PROM, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stdout + out.stderr


def _jobs(config: dict) -> dict[str, list[tuple[str, str | None]]]:
    return {
        job["job_name"]: [(t, (g.get("labels") or {}).get("region")) for g in job["static_configs"] for t in g["targets"]]
        for job in config["scrape_configs"]
    }


def test_the_static_scrape_config_is_the_one_rendered_for_default_settings() -> None:
    rendered = prometheus.config(Settings())
    assert _jobs(yaml.safe_load((PROM / "prometheus.yml").read_text())) == _jobs(rendered)


def test_compose_lists_every_service_of_the_embedded_stack_with_the_settings_ports() -> None:
    settings = Settings()
    compose = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
    services = compose["services"]
    env = compose["x-regionsync-env"]
    in_compose = Settings(**{k.removeprefix("REGIONSYNC_").lower(): v for k, v in env.items() if "${" not in str(v)})
    assert in_compose.regions == settings.regions
    fields = {f"REGIONSYNC_{name.upper()}" for name in Settings.model_fields}
    assert set(env) <= fields, f"unknown settings: {set(env) - fields}"

    expected = {stack.CHANGES: in_compose.metrics_port("changes"), "prometheus": None}
    for region in in_compose.regions:
        expected[stack.service_name(region)] = in_compose.serve_port(region)
        expected[stack.indexer_name(region)] = in_compose.metrics_port("indexer", region)
        expected[stack.dialog_name(region)] = in_compose.metrics_port("dialog", region)
    assert set(expected) <= set(services)
    for name, port in expected.items():
        if port is None:
            continue
        assert f"{port}:{port}" in services[name]["ports"], name
        assert services[name]["environment"] == env, name
    for region in in_compose.regions:
        check = " ".join(services[stack.service_name(region)]["healthcheck"]["test"])
        assert f":{in_compose.serve_port(region)}/readyz" in check
        assert services[stack.service_name(region)]["entrypoint"][-1] == region
    # The compose Prometheus scrapes the same jobs, by service name.
    compose_jobs = _jobs(yaml.safe_load((PROM / "compose.yml").read_text()))
    for job, targets in _jobs(prometheus.config(in_compose)).items():
        ports = sorted(re.sub(r".*:", "", t) for t, _ in targets)
        assert sorted(re.sub(r".*:", "", t) for t, _ in compose_jobs[job]) == ports
