"""Settings and partial stacks for tests: every port free, every region's parts where a test needs them.

A whole stack (tests/e2e/conftest.py) starts everything; a package that needs fewer parts starts
just those here: each region's broker needs its object store first (it keeps its log there).
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from regionsync.settings import Settings
from stack import broker, edge, milvus, postgres, procs, seaweed, topics


def free_settings(state_dir: Path, regions: Sequence[str] = ("east", "north"), **overrides: Any) -> Settings:
    """Settings for a stack of ``regions`` on free ports in ``state_dir``."""
    values: dict[str, Any] = {"state_dir": state_dir, "regions": list(regions),
                              **procs.free_infra_ports(list(regions), overrides.get("source_region") or None)}
    values.update(overrides)
    return Settings(**values)


def start_region(settings: Settings, region: str, *, with_milvus: bool = False, with_topics: bool = True) -> None:
    """A region's object store, Postgres and broker with its edge (and its topics; its Milvus if asked)."""
    seaweed.start(settings, region)
    postgres.start(settings, region)
    broker.start(settings, region)
    if settings.link_tls:
        edge.start(settings, region)
    if with_topics:
        topics.ensure_topics(settings, region)
    if with_milvus:
        milvus.start(settings, region)


def stop_region(settings: Settings, region: str) -> None:
    milvus.stop(settings, region)
    edge.stop(settings, region)
    broker.stop(settings, region)
    postgres.stop(settings, region)
    seaweed.stop(settings, region)


@contextmanager
def regions_up(settings: Settings, regions: Sequence[str] | None = None, **kwargs: Any) -> Iterator[Settings]:
    """``start_region`` for each region (all by default), stopped again at the end."""
    regions = list(regions or settings.regions)
    started: list[str] = []
    try:
        for region in regions:
            started.append(region)
            start_region(settings, region, **kwargs)
        yield settings
    finally:
        for region in reversed(started):
            stop_region(settings, region)


@contextmanager
def stopped_after(state_dir: Path) -> Iterator[list[str]]:
    """A list for the names of the processes a test starts: each is stopped afterwards, even if
    the test fails."""
    names: list[str] = []
    try:
        yield names
    finally:
        for name in names:
            procs.stop(state_dir, name, timeout=10)
