"""Connector configs are data: JSON templates with ``${NAME}`` placeholders, rendered from Settings.

A placeholder ``${NAME}`` takes, in this order: the Settings field or property ``name`` (so
``${PG_PASSWORD}`` is ``REGIONSYNC_PG_PASSWORD`` or its default, secrets unwrapped from
``SecretStr``), then the environment variable ``NAME`` (for templates that need values Settings
does not know). Placeholders are substituted inside parsed JSON string values, so a password with
quotes or backslashes cannot break the JSON. Every value of the result is a string, as Kafka
Connect expects.

The packaged template does not hold the database password: it names it as
``${env:CMS_PG_PASSWORD}`` (a ``${...}`` with a colon is Connect's own reference, left as it is),
which Connect resolves from its environment through Kafka's ``EnvVarConfigProvider``, so its REST
answers and config topic never hold the password. A template may still hold secrets (a
``${PG_PASSWORD}`` placeholder): show a rendered config only through :func:`masked`.

Choices in the packaged ``postgres-documents.json`` that the JSON cannot explain itself:
``decimal.handling.mode=string`` because with schemas disabled a ``precise`` decimal arrives as
opaque base64 bytes; ``heartbeat.interval.ms`` because WAL written by other databases of the same
server (regionsync's own state database) never reaches this slot's decoder, so without heartbeats
the slot's confirmed LSN stalls and the server keeps that WAL (Debezium writes the heartbeats to
``__debezium-heartbeat.<topic.prefix>``).
"""

from __future__ import annotations

import functools
import json
import os
import re
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path
from typing import Any

from pydantic import SecretStr

from connectors.errors import TemplateError
from regionsync.settings import Settings

TEMPLATES_DIR = Path(__file__).resolve().parent / "templates"
DEFAULT_TEMPLATE = "postgres-documents.json"
MASK = "***"

_PLACEHOLDER = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)\}")
# Config keys whose values are secrets in Connect, Debezium and Kafka client configs.
_SECRET_KEY = re.compile(r"password|passwd|secret|token|credential|api[._-]?key|private[._-]?key|jaas\.config", re.I)


def read_template(source: str | Path | None = None) -> tuple[str, str]:
    """The template's text and where it came from.

    ``source`` is a file path, or the name of a template shipped in ``connectors/templates``;
    None means the default template.
    """
    if source is not None and Path(source).is_file():
        path = Path(source)
        try:
            return path.read_text(encoding="utf-8"), str(path)
        except OSError as exc:
            raise TemplateError(f"cannot read connector template {path}: {exc}") from exc
    name = str(source) if source is not None else DEFAULT_TEMPLATE
    packaged = TEMPLATES_DIR / name
    if "/" not in name and packaged.is_file():
        return packaged.read_text(encoding="utf-8"), f"connectors/templates/{name}"
    raise TemplateError(f"connector template {source!s} not found (neither a file nor a packaged template)")


def is_secret_key(key: str) -> bool:
    return bool(_SECRET_KEY.search(key))


def _setting(settings: Settings, name: str) -> str | None:
    attr = name.lower()
    if attr not in type(settings).model_fields and not isinstance(getattr(type(settings), attr, None), property):
        return None
    value: Any = getattr(settings, attr)
    if isinstance(value, SecretStr):
        return value.get_secret_value()
    if isinstance(value, list | tuple):
        return ",".join(str(v) for v in value)
    if isinstance(value, dict):
        return ",".join(f"{k}={v}" for k, v in value.items())
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)


def _as_text(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str):
        return value
    if isinstance(value, int | float):
        return str(value)
    return json.dumps(value)


def render(
    text: str,
    settings: Settings,
    env: Mapping[str, str] | None = None,
    origin: str = "template",
) -> dict[str, str]:
    """Parse a JSON template and substitute its placeholders; see the module docstring for the order."""
    environ = os.environ if env is None else env
    try:
        raw = json.loads(text)
    except json.JSONDecodeError as exc:
        raise TemplateError(f"{origin} is not valid JSON: {exc}") from exc
    if not isinstance(raw, dict):
        raise TemplateError(f"{origin} must hold a JSON object of connector settings")

    def lookup(key: str, name: str) -> str:
        value = _setting(settings, name)
        if value is None:
            value = environ.get(name)
        if value is None:
            raise TemplateError(
                f"{origin}: no value for ${{{name}}} (in {key!r}): it is not a setting; "
                f"set the environment variable {name}"
            )
        return value

    out: dict[str, str] = {}
    for key, value in raw.items():
        text_value = _as_text(value)
        out[str(key)] = _substitute(text_value, functools.partial(lookup, str(key)))
    return out


def _substitute(text: str, lookup: Callable[[str], str]) -> str:
    return _PLACEHOLDER.sub(lambda match: lookup(match.group(1)), text)


def load(
    settings: Settings,
    source: str | Path | None = None,
    env: Mapping[str, str] | None = None,
) -> dict[str, str]:
    """Read and render a connector template (default: the packaged Postgres documents connector),
    with the source region's settings: the CMS database it captures and Connect live there."""
    text, origin = read_template(source)
    return render(text, settings.source(), env=env, origin=origin)


def secret_values(settings: Settings, config: Mapping[str, str] | None = None) -> list[str]:
    """Every secret the settings and ``config`` hold, for scrubbing free text (error messages, logs)."""
    found = [v.get_secret_value() for v in settings.model_dump().values() if isinstance(v, SecretStr)]
    if config:
        found += [v for k, v in config.items() if is_secret_key(k)]
    return [v for v in found if v]


def scrub(text: str, secrets: Iterable[str]) -> str:
    """``text`` with every occurrence of a secret replaced by the mask (longest first)."""
    for secret in sorted({s for s in secrets if s}, key=len, reverse=True):
        text = text.replace(secret, MASK)
    return text


def masked(config: Mapping[str, Any], secrets: Iterable[str] = ()) -> dict[str, Any]:
    """A copy safe to print or log: secret keys' values become ``***``, and any of ``secrets``
    embedded in another value (a JDBC URL, a JAAS line) is replaced too."""
    known = list(secrets)
    out: dict[str, Any] = {}
    for key, value in config.items():
        if is_secret_key(key):
            out[key] = MASK if value not in (None, "") else value
        elif isinstance(value, str) and known:
            out[key] = scrub(value, known)
        else:
            out[key] = value
    return out
