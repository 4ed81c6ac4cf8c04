"""schemathesis against the OpenAPI spec of a running region service: no 5xx, every response
conforms to the spec (status code, content type, body schema), and no endpoint that declares
bearer auth answers without it (``ignored_auth``: requests without a token and with a made-up
one). With the assistant's token: the operator's endpoints answer 403, as the spec says (an
operator's token would let schemathesis promote regions under the other tests' feet; the
operator's endpoints are tested one by one in test_auth.py)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from .conftest import ASSISTANT_TOKEN

pytestmark = pytest.mark.integration

CHECKS = ("not_a_server_error,status_code_conformance,content_type_conformance,response_schema_conformance,"
          "ignored_auth")


@pytest.mark.parametrize("region", ["east", "north"])
def test_the_service_keeps_its_openapi_contract(urls: dict[str, str], region: str, tmp_path: Path) -> None:
    st = Path(sys.executable).with_name("schemathesis")
    out = subprocess.run(
        [str(st), "run", f"{urls[region]}/openapi.json", "--checks", CHECKS, "--max-examples", "15",
         "--request-timeout", "60", "--seed", "1", "--no-color", "--header", f"Authorization: Bearer {ASSISTANT_TOKEN}"],
        capture_output=True, text=True, timeout=900, cwd=tmp_path,
    )
    assert out.returncode == 0, out.stdout[-15000:] + out.stderr[-2000:]
