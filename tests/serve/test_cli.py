"""``regionsync search|ask|region`` through the running services (subprocesses, settings from
the environment)."""

from __future__ import annotations

import pytest

from regionsync.settings import Settings
from tests.e2e.test_cli import cli

pytestmark = pytest.mark.integration


def test_search_and_ask_use_the_running_service(settings: Settings) -> None:
    out = cli(settings, "search", "return an item within 30 days", "--region", "north")
    assert out.returncode == 0, out.stderr
    assert "region north (service)" in out.stdout and "kb-returns" in out.stdout
    ask = cli(settings, "ask", "How long does standard shipping take?", "--region", "east")
    assert ask.returncode == 0, ask.stderr
    assert "[1]" in ask.stdout and "kb-shipping#0@" in ask.stdout
    status = cli(settings, "region", "status", "--json")
    assert status.returncode == 0 and '"active": "east"' in status.stdout
    secret = settings.admin_token.get_secret_value()
    assert secret not in out.stdout + out.stderr + ask.stdout + ask.stderr + status.stdout + status.stderr


def test_region_promote_is_idempotent_on_the_active_region(settings: Settings) -> None:
    out = cli(settings, "region", "promote", "east")
    assert out.returncode == 0, out.stderr
    assert "already active" in out.stdout
    assert settings.admin_token.get_secret_value() not in out.stdout + out.stderr
