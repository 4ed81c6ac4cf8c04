"""What every scenario gets: the stack's settings, the workload, metrics, and the CLI (whose
output is kept for the secrets scan)."""

from __future__ import annotations

import subprocess
import sys
import time
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from prometheus_client.parser import text_string_to_metric_families

from drills.workload import Workload
from drills.workload_model import WorkloadConfig
from regionsync.settings import Settings


@dataclass(frozen=True)
class Load:
    """The live workload of every trial (kept small: the suite runs many trials on 2 cores)."""

    doc_rate: float = 2.0
    doc_pool: int = 20
    users: int = 3
    think_s: float = 1.0
    search_rate: float = 0.5


@dataclass
class FaultContext:
    settings: Settings
    load: Load = field(default_factory=Load)
    say: Callable[[str], None] = print
    converge_timeout_s: float = 240.0
    outputs: list[str] = field(default_factory=list)  # every CLI output of the run (secrets scan)

    def workload(self, seed: int, run_id: str, **overrides: Any) -> Workload:
        """Started: document edits and customers on the active region."""
        from serve.roles import active_region

        active = overrides.pop("start_region", None) or active_region(self.settings)
        config = WorkloadConfig(
            regions=tuple(self.settings.regions), start_region=active, users=self.load.users,
            think_s=self.load.think_s, doc_rate=self.load.doc_rate, doc_pool=self.load.doc_pool,
            search_rate=self.load.search_rate, seed=seed, run_id=run_id,
            # Nobody is promoted here: a region that failed a customer is the active one again as
            # soon as it answers, so customers go back to it after a few seconds, not a minute.
            avoid_min_s=3.0, avoid_max_s=3.0,
        )
        if overrides:
            from dataclasses import replace

            config = replace(config, **overrides)
        wl = Workload(self.settings, config)
        wl.start()
        return wl

    def cli(self, *args: str, timeout: float = 600.0) -> subprocess.CompletedProcess[str]:
        """Run ``regionsync ARGS`` as a user would; its output joins the secrets scan."""
        out = subprocess.run(
            [sys.executable, "-m", "cli", *args],
            capture_output=True, text=True, env=self.settings.child_env(), timeout=timeout,
        )
        text = f"$ regionsync {' '.join(args)}  (exit {out.returncode})\n{out.stdout}\n{out.stderr}"
        self.outputs.append(text)
        # Kept with the stack's logs: what an operator saw, for the report and the secrets scan.
        with open(self.settings.state_dir / "logs" / "faults-cli.log", "a", encoding="utf-8") as fh:
            fh.write(text + "\n")
        return out

    def metrics(self, worker: str, region: str | None = None, source: str | None = None
                ) -> dict[str, dict[tuple[tuple[str, str], ...], float]]:
        """A worker's /metrics as sample name -> labels -> value ({} if it does not answer)."""
        url = f"http://{self.settings.serve_host}:{self.settings.metrics_port(worker, region, source)}/metrics"
        try:
            text = urllib.request.urlopen(url, timeout=5).read().decode()
        except OSError:
            return {}
        out: dict[str, dict[tuple[tuple[str, str], ...], float]] = {}
        for family in text_string_to_metric_families(text):
            for sample in family.samples:
                out.setdefault(sample.name, {})[tuple(sorted(sample.labels.items()))] = sample.value
        return out

    def skipped(self) -> dict[str, float]:
        """Per region: records its indexer's version guard refused, since that process started."""
        out = {}
        for region in self.settings.regions:
            samples = self.metrics("indexer", region).get("regionsync_index_records_skipped_total", {})
            out[region] = sum(samples.values())
        return out

    def freshness_buckets(self, region: str) -> dict[float, float]:
        samples = self.metrics("indexer", region).get("regionsync_freshness_seconds_bucket", {})
        return {float(dict(labels)["le"]): value for labels, value in samples.items()}


class SkipCounter:
    """Records the version guards refused over a trial, across indexer restarts (a restarted
    process counts from zero: read it before a fault that restarts it, with :meth:`before_restart`)."""

    def __init__(self, ctx: FaultContext) -> None:
        self.ctx = ctx
        self.base = ctx.skipped()
        self.banked = dict.fromkeys(ctx.settings.regions, 0.0)

    def before_restart(self, regions: list[str]) -> None:
        now = self.ctx.skipped()
        for region in regions:
            self.banked[region] += max(0.0, now.get(region, 0.0) - self.base.get(region, 0.0))
            self.base[region] = 0.0

    def total(self) -> int:
        now = self.ctx.skipped()
        return int(sum(self.banked[r] + max(0.0, now.get(r, 0.0) - self.base.get(r, 0.0)) for r in self.banked))


def wait(seconds: float) -> None:
    if seconds > 0:
        time.sleep(seconds)
