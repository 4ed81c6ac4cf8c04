"""``regionsync search|ask|region`` through the running services (subprocesses, settings from
the environment)."""

from __future__ import annotations

import orjson
import pytest

from regionsync.settings import Settings
from stack import procs
from tests.e2e.test_cli import cli

from .conftest import ASSISTANT_TOKEN, OPERATOR_TOKEN

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
    shown = out.stdout + out.stderr + ask.stdout + ask.stderr + status.stdout + status.stderr
    assert ASSISTANT_TOKEN not in shown and OPERATOR_TOKEN not in shown


def test_region_promote_is_idempotent_on_the_active_region(settings: Settings) -> None:
    out = cli(settings, "region", "promote", "east")
    assert out.returncode == 0, out.stderr
    assert "already active" in out.stdout
    assert OPERATOR_TOKEN not in out.stdout + out.stderr


def test_search_and_ask_work_in_process_when_the_service_is_down(settings: Settings) -> None:
    # The same stack, but the services are looked for on ports where nothing listens.
    down = settings.model_copy(update={"serve_base_port": procs.free_port_block(len(settings.regions))})
    out = cli(down, "search", "return an item within 30 days", "--region", "north")
    assert out.returncode == 0, out.stderr
    assert "region north: " in out.stdout and "(service)" not in out.stdout and "kb-returns" in out.stdout
    ask = cli(down, "ask", "How long does standard shipping take?", "--region", "north", "--json")
    assert ask.returncode == 0, ask.stderr
    data = orjson.loads(ask.stdout)
    assert data["region"] == "north" and data["composer"] == "extractive"
    assert data["sources"][0]["doc_id"] == "kb-shipping" and "three to five working days" in data["answer"]
