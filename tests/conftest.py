"""Running the suite on several workers (pytest-xdist, ``scripts/test.sh -n 2``).

Each test package starts its own stack once (package-scoped fixtures), so a package is one unit of
work: ``--dist loadgroup`` keeps all its tests on one worker, and two packages run side by side
(most of a stack test's time is spent waiting on services, so two fit on two cores). The longest
packages are handed out first so the run does not end waiting on one of them. Each worker picks
its ports in a slot of its own (``REGIONSYNC_PORT_SLOT``): two stacks starting at the same moment
cannot both choose a port that neither has bound yet.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from stack.procs import PORT_SLOT_ENV

TESTS = Path(__file__).parent

# Minutes a package took on a 2-core machine (`--durations` in the CI log), longest first; the
# others follow in their usual order. Only the order of hand-out depends on it, never a result.
LONGEST_FIRST = ("faults", "drills", "regionsync", "serve", "e2e", "bench", "dialog", "indexer", "mirror")


def pytest_configure(config: pytest.Config) -> None:
    worker = os.environ.get("PYTEST_XDIST_WORKER", "")
    count = os.environ.get("PYTEST_XDIST_WORKER_COUNT", "")
    if worker.startswith("gw") and count.isdigit():
        os.environ[PORT_SLOT_ENV] = f"{int(worker[2:])}/{int(count)}"


def _package(item: pytest.Item) -> str:
    try:
        return item.path.relative_to(TESTS).parts[0]
    except ValueError:
        return ""


@pytest.hookimpl(tryfirst=True)  # before xdist's own hook, which reads the xdist_group marks
def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    rank = {name: i for i, name in enumerate(LONGEST_FIRST)}
    items.sort(key=lambda item: rank.get(_package(item), len(rank)))  # stable: file order within
    for item in items:
        item.add_marker(pytest.mark.xdist_group(_package(item) or "tests"))
