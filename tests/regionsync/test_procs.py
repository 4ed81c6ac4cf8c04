"""Stopping the embedded stack's processes: a graceful stop that times out says so and kills; a
kill -9 asked for on purpose (crash tests) is silent and leaves nothing behind."""

from __future__ import annotations

import logging
import sys
from pathlib import Path

import pytest

from stack import procs

IGNORES_TERM = "import signal, time; signal.signal(signal.SIGTERM, signal.SIG_IGN); print('up', flush=True); time.sleep(60)"


def _spawn(state: Path, name: str) -> procs.Proc:
    proc = procs.spawn(state, name, [sys.executable, "-c", IGNORES_TERM])
    procs.wait_until(lambda: "up" in proc.log_path.read_text(), 30, name, proc)
    return proc


def test_kill9_is_immediate_and_quiet(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    proc = _spawn(tmp_path, "victim")
    with caplog.at_level(logging.INFO, logger="stack.procs"):
        procs.kill9(tmp_path, "victim")
    assert not proc.alive()
    assert procs.read_proc(tmp_path, "victim") is None  # pid file gone
    assert not [r for r in caplog.records if r.levelno >= logging.WARNING], caplog.text


def test_a_stop_that_times_out_says_so_and_kills(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    proc = _spawn(tmp_path, "stubborn")
    with caplog.at_level(logging.INFO, logger="stack.procs"):
        assert procs.stop(tmp_path, "stubborn", timeout=0.3) is True
    assert not proc.alive()
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert warnings == ["stubborn did not stop within 0s: killing"]
    assert procs.stop(tmp_path, "stubborn") is False  # nothing left to stop
