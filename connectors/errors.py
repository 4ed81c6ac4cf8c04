"""Errors of the connectors package. ``ConnectorError`` is the root; the CLI prints any of them cleanly.

Messages never carry a secret: the client scrubs the values of secret config keys from whatever
Kafka Connect answers before it builds an error.
"""

from __future__ import annotations


class ConnectorError(Exception):
    """Base of every error raised by the connectors package."""


class TemplateError(ConnectorError):
    """A connector template cannot be read, parsed or rendered (e.g. a placeholder has no value)."""


class ConnectRestError(ConnectorError):
    """Kafka Connect's REST API answered with an error, or could not be reached (``status`` None)."""

    def __init__(self, method: str, path: str, status: int | None, message: str) -> None:
        self.method = method
        self.path = path
        self.status = status
        self.message = message
        where = f"{method} {path}"
        super().__init__(f"{where}: HTTP {status}: {message}" if status is not None else f"{where}: {message}")


class ConnectorNotFound(ConnectRestError):
    """The named connector does not exist on the Connect cluster (HTTP 404)."""


class ConfigInvalid(ConnectorError):
    """Connect's validation found errors in a connector config; ``errors`` lists them as ``key: message``."""

    def __init__(self, connector_class: str, errors: list[str]) -> None:
        self.errors = errors
        super().__init__(f"{connector_class} config has {len(errors)} error(s):\n  " + "\n  ".join(errors))


class ConnectorFailed(ConnectorError):
    """The connector or one of its tasks is FAILED; ``trace`` is Connect's stack trace (first lines)."""

    def __init__(self, name: str, what: str, trace: str) -> None:
        self.name = name
        self.trace = trace
        super().__init__(f"connector {name}: {what} FAILED\n{trace}")


class ConnectorTimeout(ConnectorError):
    """A connector did not reach the wanted state in time."""


class SlotError(ConnectorError):
    """A replication slot or publication could not be dropped."""
