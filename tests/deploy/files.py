"""The deployment files read as data, for the tests of tests/deploy/: docker-compose.yml (with
its ``${VAR}`` references resolved the way ``docker-compose`` would with the secrets set) and the
Dockerfile's stages."""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from regionsync.settings import Settings

ROOT = Path(__file__).resolve().parents[2]
COMPOSE = ROOT / "docker-compose.yml"
DOCKERFILE = ROOT / "Dockerfile"
PROM = ROOT / "deploy" / "prometheus"
# Every service but Prometheus says which region owns it.
REGION_LABEL = "regionsync.region"
# The variables docker-compose.yml requires (${VAR:?...}): the secrets, set in an .env file.
SECRETS = ("REGIONSYNC_PG_PASSWORD", "REGIONSYNC_S3_SECRET_ACCESS_KEY", "REGIONSYNC_API_TOKENS")

_VAR = re.compile(r"\$\{(?P<name>[A-Za-z_][A-Za-z0-9_]*)(?:(?P<op>:[-?])(?P<arg>[^}]*))?\}")


# PostgreSQL's releases are major.minor: 16.9 is one release, 16 a moving tag.
TWO_PART_VERSIONS = {"postgres"}


def is_pinned(image: str) -> bool:
    """An exact version (``name:1.2.3``, ``name:RELEASE.2025-04-22T22-12-26Z``) or a digest."""
    if "@sha256:" in image:
        return True
    name, sep, tag = image.rpartition(":")
    if not sep or "/" in tag or not name:
        return False
    parts = 2 if name in TWO_PART_VERSIONS else 3
    return tag != "latest" and bool(re.match(r"v?\d+" + r"[.-]\d+" * (parts - 1) + r"(?![\d])", tag)
                                     or re.match(r"RELEASE\.\d{4}-\d\d-\d\dT", tag))


def compose() -> dict[str, Any]:
    loaded: dict[str, Any] = yaml.safe_load(COMPOSE.read_text())
    return loaded


def interpolate(value: Any) -> str:
    """A compose value as the container sees it: ``${VAR:-default}`` is its default, a required
    ``${VAR:?message}`` a placeholder secret, ``$$`` a dollar."""

    def one(match: re.Match[str]) -> str:
        if match["op"] == ":-":
            return match["arg"]
        if match["op"] == ":?":
            return f"test-{match['name'].lower()}"
        return ""

    return _VAR.sub(one, str(value).replace("$$", "\0")).replace("\0", "$")


def anchor_env(doc: dict[str, Any]) -> dict[str, str]:
    """The environment every regionsync process gets (``x-regionsync-env``), resolved."""
    return {key: interpolate(value) for key, value in doc["x-regionsync-env"].items()}


class _FromTheFileOnly(Settings):
    """Settings from keyword arguments only: not from REGIONSYNC_* variables the test runner has
    (the modules that build them at import time run before any fixture)."""

    @classmethod
    def settings_customise_sources(cls, settings_cls: Any, init_settings: Any, *_: Any, **__: Any) -> tuple[Any, ...]:
        return (init_settings,)


def settings_of(env: dict[str, str]) -> Settings:
    """The settings a process builds from ``env``, its REGIONSYNC_* variables."""
    values: dict[str, Any] = {key.removeprefix("REGIONSYNC_").lower(): value for key, value in env.items()}
    return _FromTheFileOnly(**values)  # pydantic parses the strings, as from the environment


def regionsync_services(doc: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """The services that run the project's image (built from the Dockerfile)."""
    return {name: svc for name, svc in doc["services"].items() if "build" in svc}


def region_of(service: dict[str, Any]) -> str | None:
    return (service.get("labels") or {}).get(REGION_LABEL)


def depends_on(service: dict[str, Any]) -> dict[str, str]:
    """Service -> condition (the short list form means "started")."""
    deps = service.get("depends_on") or {}
    if isinstance(deps, list):
        return {name: "service_started" for name in deps}
    return {name: (spec or {}).get("condition", "service_started") for name, spec in deps.items()}


def published(service: dict[str, Any]) -> set[tuple[int, int]]:
    """(host port, container port) pairs of ``ports``."""
    out = set()
    for spec in service.get("ports") or []:
        host, _, container = str(spec).rpartition(":")
        out.add((int(host.rpartition(":")[2]), int(container.split("/")[0])))
    return out


def jobs(config: dict[str, Any]) -> dict[str, list[tuple[str, dict[str, str]]]]:
    """Job -> (target, labels) of a Prometheus scrape config."""
    return {
        job["job_name"]: [(t, dict(g.get("labels") or {})) for g in job["static_configs"] for t in g["targets"]]
        for job in config["scrape_configs"]
    }


@dataclass
class Stage:
    base: str
    name: str | None
    copied: list[str] = field(default_factory=list)  # destinations' last parts, "." for a file list
    runs: list[str] = field(default_factory=list)


def dockerfile_stages(text: str | None = None) -> list[Stage]:
    """The Dockerfile's stages: base image, COPY sources, RUN commands (continuations joined)."""
    text = DOCKERFILE.read_text() if text is None else text
    logical: list[str] = []
    pending = ""
    for raw in text.splitlines():
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        if line.endswith("\\"):
            pending += line[:-1] + " "
            continue
        logical.append(pending + line)
        pending = ""
    stages: list[Stage] = []
    for line in logical:
        word, _, rest = line.partition(" ")
        word = word.upper()
        if word == "FROM":
            parts = rest.split()
            stages.append(Stage(parts[0], parts[2] if len(parts) >= 3 and parts[1].upper() == "AS" else None))
        elif word == "COPY" and not rest.startswith("--from"):
            stages[-1].copied += rest.split()[:-1]
        elif word == "RUN":
            stages[-1].runs.append(rest)
    return stages
