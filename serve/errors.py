"""The serve package's root exception and the refusals the HTTP layer turns into 4xx/503."""

from __future__ import annotations


class ServeError(Exception):
    """Root of every error raised by serve/."""


class NotActive(ServeError):
    """This region is a standby: it does not write dialog turns (HTTP 409)."""

    def __init__(self, region: str, active: str) -> None:
        super().__init__(f"region {region} is standby; the active region is {active}")
        self.region = region
        self.active = active


class Fenced(ServeError):
    """This region's turn was stopped because a promotion elsewhere fenced its writer (HTTP 503)."""


class NotCaughtUp(ServeError):
    """The region's dialog state has not reached the end of the log yet (HTTP 503, retry)."""


class UnknownSession(ServeError):
    """No session with this id in this region (HTTP 404)."""


class ServiceUnavailable(ServeError):
    """The region service is not running or did not answer (the CLI then works in-process)."""


class NotInSync(NotCaughtUp):
    """``mirrored`` acknowledgements: fewer regions than required hold this turn (HTTP 503, retry)."""


class Unauthenticated(ServeError):
    """No bearer token, or one that no entry of the token book holds (HTTP 401)."""


class Forbidden(ServeError):
    """A known token whose role may not do this (HTTP 403)."""
