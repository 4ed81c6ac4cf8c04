"""The HTTP layer's authentication with a stand-in service (no stack): which role each route
wants, 401 and 403 with a message, the open probes, the audit line of an admin action, and a
service with no token at all refusing to start. test_auth.py checks the same on the real services."""

from __future__ import annotations

import logging
from typing import Any

import pytest
from fastapi.testclient import TestClient
from pydantic import SecretStr

from regionsync.settings import Settings
from serve.app import create_app
from serve.auth import TokenConfigError

ASSISTANT, OPERATOR = "assistant-" + "1" * 20, "operator-" + "2" * 20


class Stub:
    def __init__(self, tokens: str = f"assistant:{ASSISTANT},operator:{OPERATOR}") -> None:
        self.settings = Settings(api_tokens=SecretStr(tokens), api_tokens_file="/nonexistent/api-tokens")
        self.region = "east"
        self.chat = None
        self.promoted = 0

    def readings(self) -> dict[str, Any]:
        return {}

    def readiness(self) -> dict[str, Any]:
        return {"ready": True, "region": "east", "role": "active", "checks": {}}

    def search(self, query: str, k: int) -> list[Any]:
        return []

    def promote(self, force: bool = False) -> dict[str, Any]:
        self.promoted += 1
        return {"region": "east", "active": "east", "epoch": 1, "previous": None, "changed": False,
                "published": True, "cut": {}, "dialog_positions": {}}

    def fenced_report(self) -> list[dict[str, Any]]:
        return []


def client(stub: Stub | None = None) -> TestClient:
    return TestClient(create_app(stub or Stub()), raise_server_exceptions=False)  # type: ignore[arg-type]


def auth(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


@pytest.mark.parametrize(("method", "path", "role"), [
    ("GET", "/search?q=hello", "assistant"),
    ("GET", "/admin/conflicts", "operator"),
    ("POST", "/admin/promote", "operator"),
])
def test_each_route_wants_its_role(method: str, path: str, role: str) -> None:
    c = client()
    right, wrong = (ASSISTANT, OPERATOR) if role == "assistant" else (OPERATOR, ASSISTANT)
    missing = c.request(method, path)
    assert missing.status_code == 401 and "missing bearer token" in missing.json()["detail"]
    assert missing.headers["WWW-Authenticate"] == "Bearer"
    assert c.request(method, path, headers={"Authorization": "Basic dXNlcjpwYXNz"}).status_code == 401
    unknown = c.request(method, path, headers=auth("z" * 30))
    assert unknown.status_code == 401 and "unknown bearer token" in unknown.json()["detail"]
    other = c.request(method, path, headers=auth(wrong))
    assert other.status_code == 403 and f"needs the {role} role" in other.json()["detail"]
    assert c.request(method, path, headers=auth(right)).status_code == 200


def test_the_probes_answer_without_a_token() -> None:
    c = client()
    assert c.get("/healthz").status_code == 200 and c.get("/readyz").status_code == 200
    assert c.get("/metrics").status_code == 200


def test_a_refused_call_changes_nothing_and_an_admin_action_is_audited(caplog: pytest.LogCaptureFixture) -> None:
    stub = Stub()
    c = client(stub)
    with caplog.at_level(logging.INFO, logger="regionsync.audit"):
        assert c.post("/admin/promote", headers=auth(ASSISTANT)).status_code == 403
        assert stub.promoted == 0
        assert c.post("/admin/promote", headers=auth(OPERATOR)).status_code == 200
    lines = [r.getMessage() for r in caplog.records if r.name == "regionsync.audit"]
    assert any("refused POST /admin/promote" in line and "role is assistant" in line for line in lines)
    assert any("promote (force=False) by operator (env:2) done" in line for line in lines)
    assert not any(ASSISTANT in line or OPERATOR in line for line in lines)


def test_the_spec_declares_bearer_auth_on_the_protected_routes_only() -> None:
    spec = client().get("/openapi.json").json()
    for path, ops in spec["paths"].items():
        for method, op in ops.items():
            secured = bool(op.get("security"))
            assert secured == (path not in ("/healthz", "/readyz", "/metrics")), (method, path)
            if secured:
                assert {"401", "403"} <= set(op["responses"]), (method, path)


def test_a_service_without_any_token_refuses_to_start() -> None:
    with pytest.raises(TokenConfigError, match="no API token configured"):
        create_app(Stub(tokens=""))  # type: ignore[arg-type]
