"""Every endpoint of a running region service against its callers: 401 without a token or with
an unknown one, 403 with the other role's, 200 with the right one; the open probes answer
anyone; a token rotated in the token file takes effect without a restart; admin actions leave an
audit line naming the role, never the token."""

from __future__ import annotations

import secrets
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import requests

from regionsync.settings import Settings

from .conftest import ASSISTANT_TOKEN, OPERATOR_TOKEN, ROTATING_TOKEN, session_as, wait_for

pytestmark = pytest.mark.integration

OPEN = {("GET", "/healthz"), ("GET", "/readyz"), ("GET", "/metrics")}
SESSION = f"auth-{secrets.token_hex(4)}"
# A request each protected endpoint answers 200 to, on the active region (east), in this order;
# the role it needs.
CASES: dict[tuple[str, str], tuple[str, dict[str, Any], str]] = {
    ("GET", "/search"): ("/search", {"params": {"q": "return an item"}}, "assistant"),
    ("POST", "/ask"): ("/ask", {"json": {"question": "How long does shipping take?"}}, "assistant"),
    ("POST", "/sessions/{session_id}/turns"): (f"/sessions/{SESSION}/turns", {"json": {"text": "hello"}}, "assistant"),
    ("GET", "/sessions/{session_id}"): (f"/sessions/{SESSION}", {}, "assistant"),
    ("POST", "/admin/promote"): ("/admin/promote", {}, "operator"),
    ("GET", "/admin/conflicts"): ("/admin/conflicts", {}, "operator"),
    ("POST", "/admin/sessions/{session_id}/erase"): (f"/admin/sessions/{SESSION}-erased/erase",
                                                     {"params": {"reason": "ticket 1"}}, "operator"),
}
TOKENS = {"assistant": ASSISTANT_TOKEN, "operator": OPERATOR_TOKEN}
OTHER = {"assistant": "operator", "operator": "assistant"}


def operations(url: str) -> set[tuple[str, str]]:
    spec = requests.get(f"{url}/openapi.json", timeout=30).json()
    return {(method.upper(), path) for path, ops in spec["paths"].items() for method in ops}


def call(url: str, case: tuple[str, dict[str, Any], str], method: str, token: str | None) -> requests.Response:
    path, kwargs, _role = case
    headers = {"Authorization": f"Bearer {token}"} if token is not None else {}
    return requests.request(method, f"{url}{path}", headers=headers, timeout=120, **kwargs)


def test_the_cases_cover_every_operation_of_the_spec(urls: dict[str, str]) -> None:
    assert operations(urls["east"]) == set(CASES) | OPEN


@pytest.mark.parametrize("op", list(CASES), ids=[f"{m} {p}" for m, p in CASES])
def test_each_endpoint_wants_a_token_of_its_role(urls: dict[str, str], op: tuple[str, str]) -> None:
    method, template = op
    case = CASES[op]
    role = case[2]
    if template == "/sessions/{session_id}":  # a session to read (the case may run alone)
        turn = session_as(ASSISTANT_TOKEN).post(f"{urls['east']}/sessions/{SESSION}/turns", json={"text": "hi"},
                                                timeout=120)
        assert turn.status_code == 200, turn.text
    for token, status, words in ((None, 401, "missing bearer token"), ("x" * 40, 401, "unknown bearer token"),
                                 (TOKENS[OTHER[role]], 403, f"needs the {role} role")):
        resp = call(urls["east"], case, method, token)
        assert resp.status_code == status, (token is None, resp.text)
        assert words in resp.json()["detail"]
        if status == 401:
            assert resp.headers["WWW-Authenticate"] == "Bearer"
    ok = call(urls["east"], case, method, TOKENS[role])
    assert ok.status_code == 200, ok.text
    assert TOKENS[role] not in ok.text


def test_the_probes_and_metrics_answer_anyone(urls: dict[str, str]) -> None:
    for method, path in OPEN:
        resp = requests.request(method, f"{urls['north']}{path}", timeout=60)
        assert resp.status_code in (200, 503), resp.text  # /readyz: 503 is an answer (not ready)


def test_a_rotation_needs_no_restart(settings: Settings, urls: dict[str, str]) -> None:
    """The token file holds the old token; the new one is added (both work), then the old one is
    removed (only the new one works), while the services keep running."""
    assert settings.api_tokens_file is not None
    path: Path = settings.api_tokens_file
    new = f"rotated-{secrets.token_hex(12)}"

    def status(token: str) -> Callable[[], set[int]]:
        return lambda: {session_as(token).get(f"{u}/search", params={"q": "ship"}, timeout=60).status_code
                        for u in urls.values()}

    assert status(ROTATING_TOKEN)() == {200} and status(new)() == {401}
    time.sleep(0.01)  # a new modification time even on coarse clocks
    path.write_text(f"assistant:{ROTATING_TOKEN}\nassistant:{new}\n")
    wait_for(lambda: status(new)() == {200}, 10, "the added token accepted")
    assert status(ROTATING_TOKEN)() == {200}
    path.write_text(f"assistant:{new}\n")
    wait_for(lambda: status(ROTATING_TOKEN)() == {401}, 10, "the removed token refused")
    assert status(new)() == {200} and status(ASSISTANT_TOKEN)() == {200}  # the environment's stays


def test_admin_actions_are_audited_by_role_never_by_token(settings: Settings, urls: dict[str, str]) -> None:
    assert session_as(OPERATOR_TOKEN).get(f"{urls['north']}/admin/conflicts", timeout=60).status_code == 200
    assert session_as(ASSISTANT_TOKEN).get(f"{urls['north']}/admin/conflicts", timeout=60).status_code == 403
    log = settings.state_dir / "logs" / "serve-north.log"
    wait_for(lambda: "read the conflict report by operator (env:2) done" in log.read_text(), 10, "the audit line")
    text = log.read_text()
    assert "refused GET /admin/conflicts" in text and "this token's role is assistant" in text
    for token in (ASSISTANT_TOKEN, OPERATOR_TOKEN, ROTATING_TOKEN):
        assert token not in text
