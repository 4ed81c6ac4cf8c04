"""Files the stack finds next to the code: a package move must not point them elsewhere.

CI once failed on every stack test because ``stack/`` moved up a floor and ``libs_dir`` still
climbed two directories out of it (to the parent of the checkout).
"""

from __future__ import annotations

from pathlib import Path

import pytest

from stack import connect, prometheus

REPO = Path(__file__).resolve().parents[2]


def test_alert_rules_are_the_repository_file() -> None:
    assert prometheus.RULES == REPO / "deploy" / "prometheus" / "alerts.yml"
    assert prometheus.RULES.is_file()


def test_connect_jars_default_to_the_repository_vendor_dir(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(connect.LIBS_ENV, raising=False)
    expected = REPO / "vendor" / "connect-libs"
    if expected.is_dir() and any(expected.glob("connect-runtime-*.jar")):
        assert connect.libs_dir() == expected.resolve()
    else:
        with pytest.raises(Exception, match=str(expected)):
            connect.libs_dir()
