"""The CLI against the running stack: a user's view (subprocesses, settings from the environment)."""

from __future__ import annotations

import secrets
import subprocess
import sys
from pathlib import Path

import orjson
import pytest

from regionsync.kafka import read_topic
from regionsync.settings import Settings

from .conftest import wait_for

pytestmark = pytest.mark.integration


def cli(settings: Settings, *args: str, stdin: str | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "cli", *args],
        input=stdin,
        capture_output=True,
        text=True,
        env=settings.child_env(),
        timeout=120,
    )


def test_stack_status_json_lists_every_endpoint_and_lag_without_secrets(settings: Settings) -> None:
    out = cli(settings, "stack", "status", "--json")
    assert out.returncode == 0, out.stderr
    info = orjson.loads(out.stdout)
    assert info["source_region"] == settings.source_region == "east"
    assert info["connect"]["up"] and info["connect"]["url"] == settings.connect_url
    assert info["connect"]["connector"] == "RUNNING"
    assert set(info["regions"]) == set(settings.regions)
    for region in settings.regions:
        own = info["regions"][region]
        # Each region's own parts, at its own addresses (none derived from another region's).
        assert own["source"] == (region == settings.source_region)
        assert own["broker"]["up"] and own["broker"]["bootstrap"] == settings.kafka_bootstraps[region]
        assert own["object_store"]["up"] and own["object_store"]["endpoint"] == settings.s3_endpoints[region]
        assert own["postgres"]["up"] and settings.pg_addresses[region] in own["postgres"]["dsn"]
        assert "***" in own["postgres"]["dsn"] and settings.dialog_database(region) in own["postgres"]["dsn"]
        assert own["milvus_uri"] == settings.milvus_uri(region) and own["milvus_up"]
        assert own["indexer_running"] and own["dialog_running"] and own["service_running"]
        assert own["mirrors_in"] == {other: True for other in settings.others(region)}
        assert isinstance(own["lag"], int), own.get("lag_error")
    assert len({r["broker"]["bootstrap"] for r in info["regions"].values()}) == len(settings.regions)
    secret = settings.pg_password.get_secret_value()
    assert secret not in out.stdout + out.stderr


def test_publish_then_search_in_both_regions_with_sources(settings: Settings, tmp_path: Path) -> None:
    events = tmp_path / "events.jsonl"
    events.write_text(
        orjson.dumps({"doc_id": "cli-doc", "version": 1, "op": "upsert",
                      "document": {"title": "Lighthouse keeping", "body": "The lighthouse keeper trims the wick "
                                   "of the lamp every evening before the fog rolls in.", "tags": ["sea"]}}).decode()
        + "\n"
    )
    out = cli(settings, "publish", str(events))
    assert out.returncode == 0, out.stderr
    for region in settings.regions:
        def found(region: str = region) -> bool:
            res = cli(settings, "search", "who trims the lamp wick in the lighthouse", "--region", region, "--json")
            return res.returncode == 0 and any(h["doc_id"] == "cli-doc" for h in orjson.loads(res.stdout))

        wait_for(found, 60, f"cli-doc searchable in {region}")
        hits = orjson.loads(cli(settings, "search", "lighthouse lamp wick", "--region", region, "--json").stdout)
        top = hits[0]
        assert top["doc_id"] == "cli-doc" and top["title"] == "Lighthouse keeping" and top["version"] == 1
        assert top["source"]["topic"] == settings.cms_topic and top["source"]["offset"] >= 0


def test_publish_refuses_a_file_with_a_bad_line_and_sends_nothing(settings: Settings) -> None:
    tag = secrets.token_hex(4)
    good = orjson.dumps({"doc_id": f"never-sent-{tag}", "version": 1, "op": "delete"}).decode()
    out = cli(settings, "publish", "-", stdin=good + "\n{\"doc_id\": 3}\n")
    assert out.returncode == 2
    assert "line 2" in out.stderr and "doc_id" in out.stderr
    # A good file published after it: once the topic holds that, it would hold the refused line too.
    after = orjson.dumps({"doc_id": f"sent-after-{tag}", "version": 1, "op": "delete"}).decode()
    assert cli(settings, "publish", "-", stdin=after + "\n").returncode == 0
    keys = {m.key() for m in read_topic(settings, settings.cms_topic)}
    assert f"sent-after-{tag}".encode() in keys and f"never-sent-{tag}".encode() not in keys


def test_connectors_status_and_idempotent_apply(settings: Settings) -> None:
    out = cli(settings, "connectors", "apply")
    assert out.returncode == 0, out.stderr
    assert "unchanged" in out.stdout + out.stderr
    status = cli(settings, "connectors", "status", "--json")
    assert status.returncode == 0 and "RUNNING" in status.stdout
    assert settings.pg_password.get_secret_value() not in out.stdout + out.stderr + status.stdout
