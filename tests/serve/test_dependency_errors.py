"""A turn the log did not acknowledge, or a database that is restarting, is a 503 the client
retries, never a 500 (seen under the fault suite's broker-loss and postgres-restart). The service
is a stand-in here: what is checked is the HTTP layer's mapping."""

from __future__ import annotations

from typing import Any

import psycopg
import pytest
from fastapi.testclient import TestClient
from pydantic import SecretStr

from dialog.errors import DeliveryError
from regionsync.settings import Settings
from serve.app import create_app

TOKEN = "assistant-token-for-tests"


class Failing:
    def __init__(self, exc: Exception) -> None:
        self.settings = Settings(api_tokens=SecretStr(f"assistant:{TOKEN}"))
        self.region = "east"
        self.chat = None  # no chat endpoint configured: extractive answers
        self.exc = exc

    def readings(self) -> dict[str, Any]:
        return {}

    def turn(self, session_id: str, message: dict[str, Any]) -> Any:
        raise self.exc


@pytest.mark.parametrize("exc", [DeliveryError("4 of 4 events not acknowledged"),
                                 psycopg.OperationalError("connection refused")])
def test_a_failing_dependency_is_a_503_with_retry_after(exc: Exception) -> None:
    client = TestClient(create_app(Failing(exc)), raise_server_exceptions=False)  # type: ignore[arg-type]
    resp = client.post("/sessions/s-1/turns", json={"text": "where is my order?"},
                       headers={"Authorization": f"Bearer {TOKEN}"})
    assert resp.status_code == 503, resp.text
    assert resp.headers["Retry-After"] == "1" and "try again" in resp.json()["detail"]
