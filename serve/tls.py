"""Where a region service's TLS files are and how its clients verify it.

A TLS directory holds ``ca.pem`` (the CA every client verifies the services with), ``serve.pem``
and ``serve.key`` (the services' certificate chain and key). The embedded stack makes a local CA
and these files at ``stack up`` (stack/pki.py); a deployment mounts its own, with the same names.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import requests

from regionsync.settings import Settings
from serve.auth import bearer


@dataclass(frozen=True)
class TlsFiles:
    ca: Path
    cert: Path
    key: Path


def tls_files(settings: Settings) -> TlsFiles:
    root = settings.tls_root()
    return TlsFiles(root / "ca.pem", root / "serve.pem", root / "serve.key")


def verify(settings: Settings) -> str | bool:
    """What ``requests`` verifies a service with: the CA file with TLS on, the default otherwise."""
    return str(tls_files(settings).ca) if settings.tls else True


class VerifyingSession(requests.Session):
    """A session whose ``verify`` holds for every request. A plain session's ``verify`` loses to
    ``REQUESTS_CA_BUNDLE``/``CURL_CA_BUNDLE`` in the environment (requests merges those into each
    request first), and many machines set them: the services' own CA would never be used."""

    def __init__(self, verify: str | bool = True) -> None:
        super().__init__()
        self.verify = verify

    def request(self, method: str | bytes, url: str | bytes, *args: Any, **kwargs: Any) -> requests.Response:
        kwargs.setdefault("verify", self.verify)
        return super().request(method, url, *args, **kwargs)


def http_session(settings: Settings, role: str | None = None) -> requests.Session:
    """A session for the region services: their CA trusted, and ``role``'s bearer token sent."""
    http = VerifyingSession(verify(settings))
    if role is not None:
        http.headers.update(bearer(settings, role))
    return http
