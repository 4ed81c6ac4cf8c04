"""Connector templates: rendering from Settings and environment, missing values, masking."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from pydantic import SecretStr

from connectors.config import load, masked, render, secret_values
from connectors.errors import TemplateError
from regionsync.settings import Settings

REPO = Path(__file__).resolve().parents[2]
SECRET = "s3cr3t-xyz"


@pytest.fixture
def settings(tmp_path: Path) -> Settings:
    return Settings(
        state_dir=tmp_path,
        pg_host="db.internal",
        pg_port=6543,
        pg_password=SecretStr(SECRET),
        cdc_topic_prefix="cms",
        topic_partitions=3,
    )


def test_default_template_renders_from_settings(settings: Settings) -> None:
    config = load(settings, env={})
    assert config["connector.class"] == "io.debezium.connector.postgresql.PostgresConnector"
    assert config["database.hostname"] == "db.internal"
    assert config["database.port"] == "6543"
    # Connect resolves the password from its own environment (EnvVarConfigProvider): the config
    # it stores and returns holds the reference only.
    assert config["database.password"] == "${env:CMS_PG_PASSWORD}"
    assert SECRET not in json.dumps(config)
    assert config["database.dbname"] == settings.pg_database
    assert config["topic.prefix"] == "cms"
    assert config["table.include.list"] == "public.documents"
    assert config["slot.name"] == settings.replication_slot
    assert config["publication.name"] == settings.publication
    assert config["topic.creation.default.partitions"] == "3"
    assert config["plugin.name"] == "pgoutput"
    assert config["tombstones.on.delete"] == "true"
    assert all(isinstance(v, str) for v in config.values())
    assert not any("${" in v for k, v in config.items() if k != "database.password")


def test_the_connector_captures_the_source_regions_database_whichever_region_asks(settings: Settings) -> None:
    """Connect and the CMS live in the source region: a process of another region (settings made
    for it, whose flat Postgres is its own) still renders the source region's server."""
    two = settings.model_copy(update={"pg_addresses": {"east": "db.internal:6543", "north": "db.north:7543"}})
    north = two.for_region("north")
    assert (north.pg_host, north.pg_port) == ("db.north", 7543)
    config = load(north, env={})
    assert (config["database.hostname"], config["database.port"]) == ("db.internal", "6543")
    assert load(two, env={}) == config


def test_environment_fills_placeholders_that_are_not_settings(settings: Settings, tmp_path: Path) -> None:
    template = tmp_path / "t.json"
    template.write_text(json.dumps({"a": "${MY_EXTRA}", "b": "${PG_USER}@${PG_HOST}", "n": 5, "flag": True}))
    config = load(settings, template, env={"MY_EXTRA": "x", "PG_HOST": "ignored: settings win"})
    assert config == {"a": "x", "b": f"{settings.pg_user}@db.internal", "n": "5", "flag": "true"}


def test_secret_with_json_metacharacters_stays_intact(tmp_path: Path) -> None:
    nasty = 'p"a\\ss${x}'
    s = Settings(state_dir=tmp_path, pg_password=SecretStr(nasty))
    template = tmp_path / "t.json"
    template.write_text('{"database.password": "${PG_PASSWORD}"}')
    assert load(s, template, env={})["database.password"] == nasty


def test_missing_placeholder_names_the_variable(settings: Settings, tmp_path: Path) -> None:
    template = tmp_path / "t.json"
    template.write_text('{"database.sslmode": "${PG_SSLMODE_FOR_TEST}"}')
    with pytest.raises(TemplateError, match=r"PG_SSLMODE_FOR_TEST.*database\.sslmode"):
        load(settings, template, env={})


def test_bad_templates_are_template_errors(settings: Settings, tmp_path: Path) -> None:
    with pytest.raises(TemplateError, match="not found"):
        load(settings, tmp_path / "absent.json")
    (tmp_path / "list.json").write_text("[1, 2]")
    with pytest.raises(TemplateError, match="JSON object"):
        load(settings, tmp_path / "list.json")
    with pytest.raises(TemplateError, match="not valid JSON"):
        render("{", settings)


def test_masked_hides_secret_keys_and_embedded_secrets(settings: Settings) -> None:
    config = load(settings, env={})
    config["database.password"] = SECRET  # a template that holds the password itself
    config["database.url"] = f"jdbc:postgresql://u:{SECRET}@h/db"
    config["producer.override.sasl.jaas.config"] = f'PlainLoginModule required password="{SECRET}";'
    config["some.api.key"] = "k"
    shown = masked(config, secret_values(settings, config))
    assert shown["database.password"] == "***"
    assert shown["producer.override.sasl.jaas.config"] == "***"
    assert shown["some.api.key"] == "***"
    assert shown["database.url"] == "jdbc:postgresql://u:***@h/db"
    assert shown["database.user"] == settings.pg_user
    assert SECRET not in json.dumps(shown)
    assert config["database.password"] == SECRET  # the original is untouched


def test_cli_dry_run_never_prints_the_secret(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("REGIONSYNC_")}
    env.update(REGIONSYNC_PG_PASSWORD=SECRET, REGIONSYNC_STATE_DIR=str(tmp_path))
    proc = subprocess.run(
        [sys.executable, "-m", "cli", "-v", "connectors", "apply", "--dry-run"],
        capture_output=True, text=True, env=env, cwd=tmp_path, timeout=60,
    )
    assert proc.returncode == 0, proc.stderr
    assert SECRET not in proc.stdout + proc.stderr
    shown = json.loads(proc.stdout)
    assert shown["name"] == "cms-documents"
    assert shown["config"]["database.password"] == "***"
    assert shown["config"]["slot.name"] == "regionsync_cms"
