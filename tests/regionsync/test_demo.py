"""`regionsync demo` as a user runs it (a subprocess, settings from the environment), on a small
corpus and a stack of its own: both regions converge, and it ends with a conversation in the
active region's service (a cited answer, the order tool, the session's turns)."""

from __future__ import annotations

import re
import subprocess
import sys

import pytest

from stack import stack
from tests.e2e.conftest import e2e_settings
from tests.state_dirs import private_state_dir

pytestmark = pytest.mark.integration


def test_the_demo_ends_with_a_conversation_in_the_active_region() -> None:
    with private_state_dir("demo-tests") as state:
        settings = e2e_settings(state)
        try:
            out = subprocess.run([sys.executable, "-m", "cli", "demo", "--docs", "20"],
                                 capture_output=True, text=True, env=settings.child_env(), timeout=900)
        finally:
            stack.down(settings)  # the demo stops its stack; this covers a demo that died half way
    text = out.stdout
    assert out.returncode == 0, text[-3000:] + out.stderr[-3000:]
    assert text.count("every region converged") == 2, text
    conversation = text[text.index("== 6. a conversation in the active region (east"):]
    assert "customer: How do I read a JSON file?" in conversation
    answer = conversation[conversation.index("assistant: "):]
    assert answer.startswith("assistant: From the knowledge base:\n[1] ")
    assert re.search(r"\[1\] .+ <- \S+#\d+@\S+\[\d+\]:\d+", conversation), conversation  # a cited source
    assert "assistant: Order A-1001 is shipped, expected on 2026-12-02.  (tool order_lookup)" in conversation
    assert re.search(r"GET /sessions/demo-\w+: 4 turns, tool calls \['order_lookup'\], last_seq=\d+, origin=east",
                     conversation), conversation
    assert settings.pg_password.get_secret_value() not in text + out.stderr
