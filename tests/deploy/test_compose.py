"""docker-compose.yml, checked statically (these machines have no Docker engine): Debian's
``docker-compose config`` accepts it; every image is pinned; every command of the project's image
is a real command (the CLI's parser, a module's own argparse, or Python that compiles and names
real functions); every REGIONSYNC_* variable is a setting; the settings it gives describe the same
topology as the embedded stack (stack/stack.py): the same processes by name, region
and entry point, on the same ports, scraped by the compose Prometheus as by the rendered config."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from collections.abc import Iterator
from typing import Any

import pytest
import yaml

from cli.main import build_parser
from connectors.config import read_template, render
from regionsync.settings import Settings
from stack import broker, connect, milvus, postgres, procs, prometheus, seaweed, stack
from tests.deploy.commands import check_cli, check_module, check_python
from tests.deploy.files import (
    COMPOSE,
    PROM,
    ROOT,
    SECRETS,
    anchor_env,
    compose,
    depends_on,
    interpolate,
    is_pinned,
    jobs,
    published,
    region_of,
    regionsync_services,
    settings_of,
)

DOC = compose()
SERVICES: dict[str, dict[str, Any]] = DOC["services"]
ENV = anchor_env(DOC)
SETTINGS = settings_of(ENV)
ONE_SHOT = ("no", "on-failure")
INIT = "init-{}"
CONNECTOR_APPLY = "connector-apply"


def object_store_name(region: str) -> str:
    return f"s3-{region}"


# ---------------------------------------------------------------------------- the file as a whole


def test_docker_compose_accepts_the_file() -> None:
    binary = shutil.which("docker-compose")
    # Not skipped when missing: the file would go unchecked silently.
    assert binary is not None, (
        "docker-compose missing: install Debian's package (apt-get install -y docker-compose); "
        "scripts/setup.sh --test should: command -v docker-compose >/dev/null || need_apt+=(docker-compose)"
    )
    env = {k: v for k, v in os.environ.items() if not k.startswith("REGIONSYNC_")}
    env.update({name: f"test-{name.lower()}" for name in SECRETS})
    out = subprocess.run([binary, "-f", str(COMPOSE), "config", "-q"], cwd=ROOT, env=env,
                         capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stdout + out.stderr


@pytest.mark.parametrize("image,pinned", [
    ("apache/kafka:3.9.1", True), ("postgres:16.9-bookworm", True), ("quay.io/debezium/connect:3.1.3.Final", True),
    ("minio/minio:RELEASE.2025-04-22T22-12-26Z", True), ("python:3.11.13-slim-bookworm", True),
    ("redis@sha256:" + "0" * 64, True), ("apache/kafka", False), ("apache/kafka:latest", False),
    ("quay.io/debezium/connect:3.1", False), ("postgres:16", False), ("localhost:5000/kafka", False),
    ("milvusdb/milvus:v2.5.14", True), ("prom/prometheus:v2.53", False), ("python:3.11-slim-bookworm", False),
    ("apache/kafka:3.9.1-rc", True), ("minio/minio:RELEASE", False),
])
def test_is_pinned(image: str, pinned: bool) -> None:
    assert is_pinned(image) is pinned


def test_every_image_is_pinned() -> None:
    version = re.search(r'^version = "(.+)"$', (ROOT / "pyproject.toml").read_text(), re.M)
    assert version is not None
    for name, svc in SERVICES.items():
        if "build" in svc:
            # The project's image, built here: tagged with the project's version.
            assert svc["image"] == f"regionsync:{version[1]}", name
        else:
            assert is_pinned(svc["image"]), f"{name}: {svc['image']} is not pinned to an exact version"


def test_secrets_come_from_the_environment() -> None:
    # A password in the file would be in every clone of the repository.
    secret = re.compile(r"PASSWORD|SECRET|TOKEN", re.I)
    for name, svc in {"x-regionsync-env": {"environment": DOC["x-regionsync-env"]}, **SERVICES}.items():
        for key, value in (svc.get("environment") or {}).items():
            if not secret.search(key) or key == "REGIONSYNC_MILVUS_TOKEN":  # Milvus runs without auth here
                continue
            assert re.fullmatch(r"\$\{[A-Z0-9_]+:\?[^}]+\}", str(value)), f"{name}: {key} must be ${{VAR:?...}}"


# ---------------------------------------------------------------------------- settings


def test_every_regionsync_variable_is_a_setting_and_every_process_gets_the_same() -> None:
    fields = {f"REGIONSYNC_{name.upper()}" for name in Settings.model_fields}
    for name, svc in SERVICES.items():
        env = svc.get("environment") or {}
        unknown = {k for k in env if k.startswith("REGIONSYNC_")} - fields
        assert not unknown, f"{name}: not settings: {unknown}"
    for name, svc in regionsync_services(DOC).items():
        assert svc["environment"] == DOC["x-regionsync-env"], name


def test_the_settings_name_every_region_s_services() -> None:
    s = SETTINGS
    assert s.regions == ["east", "north"] and s.source_region == "east"
    for region in s.regions:
        assert s.kafka_bootstraps[region] == f"{broker.proc_name(region)}:9092"
        assert s.pg_addresses[region] == f"{postgres.proc_name(region)}:5432"
        assert s.s3_endpoints[region] == f"http://{object_store_name(region)}:9000"
        assert s.milvus_uri(region) == f"http://{milvus.proc_name(region)}:19530"
        assert s.serve_url(region) == f"http://{stack.service_name(region)}:{s.serve_port(region)}"
        # ... and those services are that region's, listening there.
        brokers = SERVICES[broker.proc_name(region)]
        assert brokers["environment"]["KAFKA_ADVERTISED_LISTENERS"] == f"PLAINTEXT://{s.kafka_bootstraps[region]}"
        assert "--address" in SERVICES[object_store_name(region)]["command"]
        assert ":9000" in SERVICES[object_store_name(region)]["command"]
    assert s.connect_url == f"http://{connect.NAME}:8083"
    # The flat values are the source region's: code that does not ask for a region gets those.
    source = s.source()
    assert (s.kafka_bootstrap, s.pg_host, s.pg_port, s.s3_endpoint) == (
        source.kafka_bootstrap, source.pg_host, source.pg_port, source.s3_endpoint)


# ---------------------------------------------------------------------------- the topology


def expected_services(region: str) -> set[str]:
    """What the embedded stack runs in ``region``, under the same names (the object store is
    MinIO here, SeaweedFS there), plus the region's init job (and the connector's in the source)."""
    infra = [object_store_name(region) if n == seaweed.proc_name(region) else n
             for n in stack.region_infra(SETTINGS, region)]
    names = {*infra, *stack.region_workers(SETTINGS, region), INIT.format(region)}
    if region == SETTINGS.source_region:
        names.add(CONNECTOR_APPLY)
    return names


def test_each_region_runs_what_the_embedded_stack_runs_there() -> None:
    for region in SETTINGS.regions:
        found = {name for name, svc in SERVICES.items() if region_of(svc) == region}
        assert found == expected_services(region), region
    assert {name for name, svc in SERVICES.items() if region_of(svc) is None} == {"prometheus"}


@pytest.fixture
def spawned(monkeypatch: pytest.MonkeyPatch) -> dict[str, list[str]]:
    """Process name -> the argv the embedded stack starts it with (nothing is started)."""
    argvs: dict[str, list[str]] = {}

    def spawn(state_dir: Any, name: str, argv: list[str], **_: Any) -> None:
        argvs[name] = list(argv)

    monkeypatch.setattr(procs, "spawn", spawn)
    for region in SETTINGS.regions:
        for name in stack.region_workers(SETTINGS, region):
            if name == stack.service_name(region):
                stack.start_service(SETTINGS, region, wait=False)
            else:
                stack.starter(SETTINGS, name)()
    return argvs


def test_the_workers_run_the_embedded_stack_s_entry_points(spawned: dict[str, list[str]]) -> None:
    assert spawned
    for name, argv in spawned.items():
        assert argv[1] == "-m", argv
        assert SERVICES[name]["entrypoint"] == ["python", *argv[1:]], name


def http_ports(s: Settings) -> dict[str, int]:
    """Process name -> the port of its /metrics (a service's is its own port)."""
    ports = {stack.CHANGES: s.metrics_port("changes")}
    for region in s.regions:
        ports[stack.service_name(region)] = s.serve_port(region)
        ports[stack.indexer_name(region)] = s.metrics_port("indexer", region)
        ports[stack.dialog_name(region)] = s.metrics_port("dialog", region)
    for source, target in s.mirror_pairs():
        ports[stack.mirror_name(source, target)] = s.metrics_port("mirror", target, source)
    return ports


def test_workers_and_services_listen_on_the_settings_ports() -> None:
    for name, port in http_ports(SETTINGS).items():
        # Published at the same number: deploy/prometheus/prometheus.yml scrapes them from the host.
        assert (port, port) in published(SERVICES[name]), name
        check = " ".join(SERVICES[name]["healthcheck"]["test"])
        path = "/readyz" if name.startswith("serve-") else "/metrics"
        assert f"http://127.0.0.1:{port}{path}" in check, name


def test_the_compose_prometheus_scrapes_what_the_rendered_config_would() -> None:
    # The rendered config's targets, with each host:port replaced by the service listening there.
    by_port = {port: name for name, port in http_ports(SETTINGS).items()}

    def by_service(target: str) -> str:
        port = int(target.rpartition(":")[2])
        return f"{by_port[port]}:{port}"

    expected = {job: [(by_service(t), labels) for t, labels in found]
                for job, found in prometheus.targets(SETTINGS).items()}
    assert jobs(yaml.safe_load((PROM / "compose.yml").read_text())) == expected
    prom = SERVICES["prometheus"]
    assert "--config.file=/etc/prometheus/compose.yml" in prom["command"]
    assert "./deploy/prometheus:/etc/prometheus:ro" in prom["volumes"]
    assert set(prom["networks"]) == set(SETTINGS.regions)


# ---------------------------------------------------------------------------- startup order


def test_depends_on_names_services_with_a_condition_they_can_meet() -> None:
    for name, svc in SERVICES.items():
        for dep, condition in depends_on(svc).items():
            assert dep in SERVICES, f"{name} depends on {dep}, which is not a service"
            if condition == "service_healthy":
                assert "healthcheck" in SERVICES[dep], f"{name} waits for {dep} to be healthy: it has no healthcheck"
            elif condition == "service_completed_successfully":
                assert SERVICES[dep].get("restart") in ONE_SHOT, f"{name} waits for {dep} to finish: it never does"
            else:
                pytest.fail(f"{name} -> {dep}: {condition}; say what is waited for (healthy or completed)")
            # Regions start on their own: a replicator waits for its source itself.
            assert region_of(SERVICES[dep]) == region_of(svc), f"{name} depends on {dep} of another region"


def test_every_long_running_service_has_a_healthcheck() -> None:
    for name, svc in SERVICES.items():
        if svc.get("restart") not in ONE_SHOT:
            assert "healthcheck" in svc, name
            assert svc.get("restart") == "unless-stopped", name


def waits_for(name: str) -> dict[str, str]:
    """Every service ``name`` waits for, directly or through another, with the condition of the
    last step."""
    found: dict[str, str] = {}
    todo = [name]
    while todo:
        for dep, condition in depends_on(SERVICES[todo.pop()]).items():
            if dep not in found:
                found[dep] = condition
                todo.append(dep)
    return found


def test_every_worker_waits_for_its_region_s_init_job() -> None:
    for region in SETTINGS.regions:
        init = INIT.format(region)
        assert SERVICES[init]["command"] == ["stack", "init", "--region", region]
        for name in stack.region_workers(SETTINGS, region):
            assert waits_for(name).get(init) == "service_completed_successfully", name
    assert waits_for(CONNECTOR_APPLY).get(INIT.format(SETTINGS.source_region)) == "service_completed_successfully"


def test_only_what_crosses_regions_is_on_the_wan() -> None:
    crossing = {stack.mirror_name(s, t) for s, t in SETTINGS.mirror_pairs()}
    for region in SETTINGS.regions:
        crossing |= {broker.proc_name(region), postgres.proc_name(region), stack.service_name(region)}
    for name, svc in SERVICES.items():
        networks = set(svc.get("networks") or [])
        if region_of(svc):
            assert region_of(svc) in networks, f"{name} is not on its region's network"
            assert networks - {region_of(svc)} <= {"wan"}, f"{name} is on another region's network"
        assert ("wan" in networks) == (name in crossing), name


# ---------------------------------------------------------------------------- source region


def test_the_source_region_s_postgres_is_captured_by_connect_with_a_password_from_its_environment() -> None:
    source = SETTINGS.source_region
    command = SERVICES[postgres.proc_name(source)]["command"]
    assert "wal_level=logical" in command
    for region in SETTINGS.others(source):
        assert "wal_level=logical" not in (SERVICES[postgres.proc_name(region)].get("command") or [])
    apply = build_parser().parse_args(SERVICES[CONNECTOR_APPLY]["command"])
    mount = next(v for v in SERVICES[CONNECTOR_APPLY]["volumes"] if v.startswith("./deploy/connect:"))
    host_dir, container_dir = mount.split(":")[:2]
    assert apply.config.startswith(container_dir + "/")
    template = ROOT / host_dir / apply.config.removeprefix(container_dir + "/")
    # The packaged template: the password is a reference Connect resolves from its own environment.
    ours = render(template.read_text(), SETTINGS, env={})
    packaged = render(read_template()[0], SETTINGS, env={})
    assert ours["database.password"] == "${env:CMS_PG_PASSWORD}"
    assert ours == packaged
    assert ours["database.hostname"] == postgres.proc_name(source)
    env = SERVICES[connect.NAME]["environment"]
    assert env["CMS_PG_PASSWORD"] == DOC["x-regionsync-env"]["REGIONSYNC_PG_PASSWORD"]
    assert env["CONNECT_CONFIG_PROVIDERS"] == "env"
    assert env["CONNECT_CONFIG_PROVIDERS_ENV_CLASS"] == "org.apache.kafka.common.config.provider.EnvVarConfigProvider"
    assert re.fullmatch(interpolate(env["CONNECT_CONFIG_PROVIDERS_ENV_PARAM_ALLOWLIST_PATTERN"]), "CMS_PG_PASSWORD")
    assert env["BOOTSTRAP_SERVERS"] == SETTINGS.kafka_bootstraps[source]


# ---------------------------------------------------------------------------- commands


def commands() -> Iterator[tuple[str, list[str]]]:
    """(service, argv) of every process the project's image runs, healthchecks included; argv
    starts with "regionsync" for the image's entrypoint."""
    for name, svc in regionsync_services(DOC).items():
        yield name, list(svc.get("entrypoint") or ["regionsync", *svc["command"]])
        test = svc.get("healthcheck", {}).get("test")
        if test:
            assert test[0] == "CMD", name
            yield f"{name} (healthcheck)", list(test[1:])


def test_every_command_is_a_real_command(monkeypatch: pytest.MonkeyPatch) -> None:
    seen = set()
    for name, argv in commands():
        if argv[0] == "regionsync":
            check_cli(name, argv[1:])
        elif argv[:2] == ["python", "-m"]:
            check_module(name, argv[2], argv[3:], monkeypatch)
        elif argv[:2] == ["python", "-c"]:
            check_python(name, argv[2])
        else:
            pytest.fail(f"{name}: {argv[0]} is neither regionsync nor python")
        seen.add(argv[0] if argv[0] == "regionsync" else " ".join(argv[:2]))
    assert seen == {"regionsync", "python -m", "python -c"}  # python -c: the healthchecks


def test_check_python_catches_a_wrong_call() -> None:
    with pytest.raises(pytest.fail.Exception):
        check_python("t", "from stack import topics\ntopics.ensure_topics(1, 2, 3, 4, 5)")
    with pytest.raises(AssertionError):
        check_python("t", "from stack import topics\ntopics.no_such_function()")
    with pytest.raises(AssertionError):
        check_python("t", "from regionsync.settings import Settings\ns = Settings()\ns.no_such_setting")
    with pytest.raises(ModuleNotFoundError):
        check_python("t", "import regionsync.no_such_module")


def test_check_module_catches_unknown_arguments(monkeypatch: pytest.MonkeyPatch) -> None:
    with pytest.raises(pytest.fail.Exception):
        check_module("t", "indexer.worker", ["--regoin", "east"], monkeypatch)
    with pytest.raises(pytest.fail.Exception):
        check_cli("t", ["mirror", "run", "--from", "east"])


def test_init_job_sets_up_each_region(monkeypatch: pytest.MonkeyPatch) -> None:
    """The init job (``regionsync stack init --region R``), run against recording fakes:
    databases, then (source region) the publication, then the region's topics."""
    calls: list[tuple[str, str]] = []
    from stack import topics

    monkeypatch.setattr(postgres, "ensure_databases", lambda s, region: calls.append(("databases", region)))
    def ensure_topics(settings: Settings, region: str, timeout: float) -> list[str]:
        calls.append(("topics", region))
        return []

    monkeypatch.setattr(topics, "ensure_topics", ensure_topics)

    class Conn:
        def __enter__(self) -> Conn:
            return self

        def __exit__(self, *exc: object) -> None:
            return None

        def execute(self, query: Any, params: Any = None) -> Any:
            text = query if isinstance(query, str) else repr(query)
            calls.append(("sql", text))
            return self

        def fetchone(self) -> None:
            return None

    import psycopg

    monkeypatch.setattr(psycopg, "connect", lambda dsn, **kw: Conn())
    for key, value in ENV.items():
        monkeypatch.setenv(key, value)
    from cli.main import main

    for name in (INIT.format(r) for r in SETTINGS.regions):
        argv = SERVICES[name]["command"]
        calls.clear()
        assert main(argv) == 0
        region = argv[-1]
        assert calls[0] == ("databases", region) and calls[-1] == ("topics", region)
        publication = [text for kind, text in calls if kind == "sql" and "CREATE PUBLICATION" in text]
        if region == SETTINGS.source_region:
            assert len(publication) == 1 and SETTINGS.publication in publication[0], calls
            assert "documents" in publication[0]
        else:
            assert publication == []
