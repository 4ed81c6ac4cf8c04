"""tests/deploy read files only: no stack, no Docker engine."""

from __future__ import annotations

import os

import pytest


@pytest.fixture(autouse=True)
def _settings_from_the_files_only(monkeypatch: pytest.MonkeyPatch) -> None:
    # The settings these tests build must come from the deployment files, not from REGIONSYNC_*
    # variables a test runner or an integration suite left in the environment.
    for name in list(os.environ):
        if name.startswith("REGIONSYNC_"):
            monkeypatch.delenv(name)
