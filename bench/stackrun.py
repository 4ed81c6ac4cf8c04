"""The bench's own embedded stack: a fresh state directory and free ports, so it never collides
with a running demo or a test session, started before the measurements and stopped after them."""

from __future__ import annotations

import logging
import shutil
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

from regionsync.settings import Settings
from stack import procs, stack

log = logging.getLogger(__name__)


def bench_settings(base: Settings, state_dir: Path) -> Settings:
    """``base`` (the user's settings: model, batch size, threads, chunking, regions) with a
    private state dir and free ports for every service of every region. Built anew, not copied:
    the per-region address maps are filled at construction, and must be the new ports'."""
    values = base.model_dump()
    values.update(
        state_dir=state_dir.resolve(),
        serve_urls={},  # the bench's own services, on the free serve ports
        **procs.free_infra_ports(list(base.regions), base.source_region),
    )
    return Settings(**values)


@dataclass
class BenchStack:
    settings: Settings
    owns_dir: bool
    start_seconds: float = 0.0

    @classmethod
    def create(cls, base: Settings, state_dir: Path | None = None) -> BenchStack:
        if state_dir is None:
            return cls(bench_settings(base, Path(tempfile.mkdtemp(prefix="regionsync-bench-")) / "state"), True)
        if state_dir.exists() and any(state_dir.iterdir()):
            raise FileExistsError(f"bench state dir {state_dir} is not empty")
        return cls(bench_settings(base, state_dir), False)

    def start(self) -> None:
        """Infrastructure, the stream workers, then the connector (its snapshot of an empty table
        is empty: every measured change is streamed)."""
        started = time.monotonic()
        stack.start_infra(self.settings)
        stack.start_workers(self.settings)
        stack.apply_connector(self.settings)
        self.start_seconds = time.monotonic() - started

    def stop(self, keep_state: bool = False) -> None:
        try:
            stack.down(self.settings)
        finally:
            if self.owns_dir and not keep_state:
                shutil.rmtree(self.settings.state_dir.parent, ignore_errors=True)
            elif keep_state:
                log.warning("bench state kept in %s (logs under logs/)", self.settings.state_dir)
