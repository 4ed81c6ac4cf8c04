"""A small HTTP client of a running region service (the CLI uses it; tests and the demo too).

It authenticates with the token of the role each call needs (serve/auth.py), read when the call
is made: a rotated token file is picked up without a new client."""

from __future__ import annotations

from typing import Any

import requests

from regionsync.settings import Settings
from serve.auth import ASSISTANT, OPERATOR, bearer
from serve.errors import ServeError, ServiceUnavailable
from serve.tls import http_session


class RegionClient:
    def __init__(self, settings: Settings, region: str, timeout_s: float = 30.0) -> None:
        self.region = region
        self._settings = settings
        self.base = settings.serve_url(region)
        self._timeout = timeout_s
        self._http = http_session(settings)  # the services' CA trusted when TLS is on

    def is_up(self) -> bool:
        try:
            return self._http.get(f"{self.base}/healthz", timeout=2).status_code == 200
        except requests.RequestException:
            return False

    def settled(self) -> bool:
        """Up and done rejoining: the service knows its role (serve/region.py)."""
        try:
            body = self._http.get(f"{self.base}/readyz", timeout=2).json()
            return bool((body.get("checks") or {}).get("role", {}).get("ok"))
        except (requests.RequestException, ValueError, AttributeError):
            return False

    def call(self, method: str, path: str, role: str = ASSISTANT, **kwargs: Any) -> requests.Response:
        """``path`` as a caller of ``role``."""
        kwargs.setdefault("timeout", self._timeout)
        kwargs["headers"] = {**bearer(self._settings, role), **(kwargs.get("headers") or {})}
        try:
            return self._http.request(method, f"{self.base}{path}", **kwargs)
        except requests.RequestException as exc:
            raise ServiceUnavailable(f"region {self.region} service at {self.base}: {exc}") from exc

    def json(self, method: str, path: str, role: str = ASSISTANT, **kwargs: Any) -> Any:
        resp = self.call(method, path, role, **kwargs)
        if resp.status_code >= 400:
            try:
                detail = resp.json().get("detail")
            except ValueError:
                detail = resp.text[:200]
            raise ServeError(f"region {self.region}: HTTP {resp.status_code}: {detail}")
        return resp.json()

    def search(self, q: str, k: int) -> dict[str, Any]:
        out: dict[str, Any] = self.json("GET", "/search", params={"q": q, "k": k})
        return out

    def ask(self, question: str, k: int = 5, session_id: str | None = None) -> dict[str, Any]:
        body: dict[str, Any] = {"question": question, "k": k}
        if session_id:
            body["session_id"] = session_id
        out: dict[str, Any] = self.json("POST", "/ask", json=body)
        return out

    def promote(self, force: bool = False) -> dict[str, Any]:
        out: dict[str, Any] = self.json("POST", "/admin/promote", OPERATOR, params={"force": "true"} if force else None)
        return out

    def erase(self, session_id: str, reason: str = "") -> dict[str, Any]:
        out: dict[str, Any] = self.json("POST", f"/admin/sessions/{session_id}/erase", OPERATOR,
                                        params={"reason": reason} if reason else None)
        return out

    def conflicts(self) -> dict[str, Any]:
        out: dict[str, Any] = self.json("GET", "/admin/conflicts", OPERATOR)
        return out
