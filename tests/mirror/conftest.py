"""Two regions' object stores, Postgres and brokers for the replicator tests (no workers)."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from regionsync.settings import Settings
from tests.stacks import free_settings, regions_up
from tests.state_dirs import private_state_dir


@pytest.fixture(scope="package")
def two_regions() -> Iterator[Settings]:
    with private_state_dir("mirror-tests") as state, regions_up(free_settings(state)) as settings:
        yield settings
