"""The Connect client rides out a rebalance (409, or 500 "a rebalance is expected") and gives up
on real errors at once. A fake HTTP session stands in for Connect: pure client logic."""

from __future__ import annotations

from typing import Any

import pytest
import requests

from connectors.client import ConnectClient
from connectors.errors import ConnectRestError


def _resp(status: int, body: bytes) -> requests.Response:
    r = requests.Response()
    r.status_code = status
    r._content = body
    return r


class FakeSession:
    def __init__(self, responses: list[requests.Response]) -> None:
        self.responses = responses
        self.calls = 0

    def request(self, *args: Any, **kwargs: Any) -> requests.Response:
        self.calls += 1
        return self.responses.pop(0)


REBALANCE = b'{"error_code":500,"message":"Request cannot be completed because a rebalance is expected"}'


def test_rebalance_answers_are_retried_until_connect_answers() -> None:
    session = FakeSession([_resp(500, REBALANCE), _resp(409, b'{"message":"rebalance in progress"}'),
                           _resp(200, b'["cms-documents"]')])
    client = ConnectClient("http://connect:8083", session=session)  # type: ignore[arg-type]
    assert client.list() == ["cms-documents"] and session.calls == 3


def test_a_real_server_error_is_not_retried() -> None:
    session = FakeSession([_resp(500, b'{"message":"NullPointerException"}'), _resp(200, b"[]")])
    client = ConnectClient("http://connect:8083", session=session)  # type: ignore[arg-type]
    with pytest.raises(ConnectRestError, match="NullPointerException"):
        client.list()
    assert session.calls == 1


def test_a_rebalance_that_never_ends_gives_up_after_the_budget() -> None:
    session = FakeSession([_resp(500, REBALANCE)] * 50)
    client = ConnectClient("http://connect:8083", conflict_retry_s=0.3, session=session)  # type: ignore[arg-type]
    with pytest.raises(ConnectRestError, match="rebalance is expected"):
        client.list()
    assert 1 < session.calls < 50
