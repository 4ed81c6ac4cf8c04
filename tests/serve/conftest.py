"""The embedded stack with the region services, started once for tests/serve/ on free ports."""

from __future__ import annotations

import secrets
from collections.abc import Iterator

import pytest
import requests
from pydantic import SecretStr

from regionsync.settings import Settings
from tests.e2e.conftest import SEED, apply_connector_patiently, e2e_settings, run_stack, wait_for
from tests.state_dirs import private_state_dir

KNOWLEDGE = [
    ("kb-returns", "Returning an order", "You can return any item within 30 days of delivery. Print the return "
     "label from your account page and drop the parcel at a post office; the refund follows within five days.",
     ["faq"]),
    ("kb-shipping", "Shipping times", "Standard shipping takes three to five working days. Express parcels "
     "arrive the next working day when ordered before 2 pm.", ["faq"]),
]


# The services' tokens (serve/auth.py): made up per test session, so they can be searched for in
# every output. ``api`` calls as the assistant, ``operator_api`` as the operator.
ASSISTANT_TOKEN = f"assistant-{secrets.token_hex(12)}"
OPERATOR_TOKEN = f"operator-{secrets.token_hex(12)}"
ROTATING_TOKEN = f"rotating-{secrets.token_hex(12)}"  # in the token file, not the environment


def session_as(token: str) -> requests.Session:
    http = requests.Session()
    http.headers["Authorization"] = f"Bearer {token}"
    return http


api = session_as(ASSISTANT_TOKEN)
operator_api = session_as(OPERATOR_TOKEN)


@pytest.fixture(scope="package")
def settings() -> Iterator[Settings]:
    with private_state_dir("serve-tests") as state:
        tokens_file = state / "secrets" / "api-tokens"  # test_auth.py rotates a token in it
        tokens_file.parent.mkdir(parents=True, exist_ok=True)
        tokens_file.write_text(f"assistant:{ROTATING_TOKEN}\n")
        s = e2e_settings(state).model_copy(update={
            "api_tokens": SecretStr(f"assistant:{ASSISTANT_TOKEN},operator:{OPERATOR_TOKEN}"),
            "api_tokens_file": tokens_file,
            # Snapshots often, so the snapshot-age metric has something to show.
            "dialog_snapshot_every_s": 5.0,
        })
        yield from run_stack(s, _connector_then_knowledge_searchable, rows=[*SEED, *KNOWLEDGE])


def _connector_then_knowledge_searchable(s: Settings) -> None:
    apply_connector_patiently(s)
    for region in s.regions:
        # Generous: the first search waits for the model, and this machine may be shared.
        wait_for(lambda r=region: _indexed(s, r), 600, f"knowledge searchable in {region}")


def _indexed(settings: Settings, region: str) -> bool:
    try:
        resp = api.get(f"{settings.serve_url(region)}/search", params={"q": "return an item", "k": 10}, timeout=120)
    except requests.RequestException:
        return False
    return resp.status_code == 200 and {"kb-returns", "kb-shipping"} <= {h["doc_id"] for h in resp.json()["hits"]}


@pytest.fixture(scope="package")
def urls(settings: Settings) -> dict[str, str]:
    return {r: settings.serve_url(r) for r in settings.regions}
