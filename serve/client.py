"""A small HTTP client of a running region service (the CLI uses it; tests and the demo too)."""

from __future__ import annotations

from typing import Any

import requests

from regionsync.settings import Settings
from serve.errors import ServeError, ServiceUnavailable


class RegionClient:
    def __init__(self, settings: Settings, region: str, timeout_s: float = 30.0) -> None:
        self.region = region
        self.base = settings.serve_url(region)
        self._timeout = timeout_s
        self._http = requests.Session()

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

    def call(self, method: str, path: str, **kwargs: Any) -> requests.Response:
        kwargs.setdefault("timeout", self._timeout)
        try:
            return self._http.request(method, f"{self.base}{path}", **kwargs)
        except requests.RequestException as exc:
            raise ServiceUnavailable(f"region {self.region} service at {self.base}: {exc}") from exc

    def json(self, method: str, path: str, **kwargs: Any) -> Any:
        resp = self.call(method, path, **kwargs)
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

    def promote(self, token: str, force: bool = False) -> dict[str, Any]:
        out: dict[str, Any] = self.json("POST", "/admin/promote", headers={"X-Admin-Token": token},
                                        params={"force": "true"} if force else None)
        return out

    def conflicts(self, token: str) -> dict[str, Any]:
        out: dict[str, Any] = self.json("GET", "/admin/conflicts", headers={"X-Admin-Token": token})
        return out
