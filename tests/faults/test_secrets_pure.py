"""The secrets scan's reach, without a stack: every file under a state dir laid out as the stack
lays it out (the stores' data excluded), CLI outputs, and Kafka Connect's REST answers read
through a fake worker."""

from __future__ import annotations

from pathlib import Path

import orjson
import pytest
import requests
from pydantic import SecretStr

from drills.faults.secrets_scan import CONNECT_PATHS, Answer, connect_answers, excluded, scan, state_files
from regionsync.settings import Settings

PASSWORD = "pg-5ecret-f00d"


def _settings(state: Path) -> Settings:
    return Settings(state_dir=state, pg_password=SecretStr(PASSWORD), api_tokens=SecretStr("operator:oper-t0ken-beef-cafe"),
                    milvus_token=SecretStr(""), answer_llm_api_key=SecretStr(""))


def _write(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)


@pytest.fixture
def state(tmp_path: Path) -> Path:
    root = tmp_path / "state"
    _write(root / "logs" / "connect.log", "started\n")
    _write(root / "connect" / "worker.properties", "bootstrap.servers=127.0.0.1:1\n")
    _write(root / "connect" / "log4j2.properties", "status = warn\n")
    _write(root / "prometheus" / "prometheus.yml", "{}\n")
    _write(root / "run" / "connect.pid", "123")
    _write(root / "pg" / "east" / "postgresql.conf", "port = 5432\n")
    _write(root / "pg" / "east" / "log" / "pg.log", "LOG: ready\n")
    _write(root / "pg" / "north" / "postgresql.conf", "port = 5433\n")
    # The stores' data: never read (the password here would otherwise be a hit).
    _write(root / "pg" / "east" / "base" / "1" / "1259", PASSWORD)
    _write(root / "pg" / "north" / "pg_wal" / "000000010000000000000001", PASSWORD)
    _write(root / "milvus" / "east" / "milvus.db", PASSWORD)
    _write(root / "seaweed" / "east" / "volume" / "1.dat", PASSWORD)
    _write(root / "prometheus" / "data" / "wal" / "00000000", PASSWORD)
    (root / "connect" / "link").symlink_to(root / "milvus" / "east" / "milvus.db")
    return root


def test_every_file_under_the_state_dir_is_read_but_the_stores_data(state: Path) -> None:
    settings = _settings(state)
    found = sorted(str(p.relative_to(state)) for p in state_files(settings))
    assert found == ["connect/log4j2.properties", "connect/worker.properties", "logs/connect.log",
                     "pg/east/log/pg.log", "pg/east/postgresql.conf", "pg/north/postgresql.conf",
                     "prometheus/prometheus.yml", "run/connect.pid"]
    why = {str(p.relative_to(state)): reason for p, reason in excluded(settings).items()}
    assert set(why) == {"pg/east", "pg/north", "milvus/east", "milvus/north", "seaweed/east", "seaweed/north",
                        "prometheus/data", "secrets"}
    hits, files, _size = scan(settings, [])
    assert hits == [] and len(files) == 8


def test_a_secret_in_a_rendered_config_file_or_an_answer_is_named_with_where_it_was(state: Path) -> None:
    settings = _settings(state)
    _write(state / "connect" / "worker.properties", f"database.password={PASSWORD}\n")
    outputs = ["$ regionsync settings  (exit 0)\npg_password=***", f"$ regionsync lag  (exit 1)\nfailed: {PASSWORD}"]
    answers = [Answer("Connect's answer to GET /connectors/c/config", f'{{"database.password":"{PASSWORD}"}}')]
    hits, _files, _size = scan(settings, outputs, answers)
    assert hits == [
        "pg_password in connect/worker.properties",
        "pg_password in the output of $ regionsync lag  (exit 1)",
        "pg_password in Connect's answer to GET /connectors/c/config",
    ]


class FakeConnect:
    """Answers like a Connect worker whose connector config holds the database password."""

    def __init__(self, names: list[str], down: bool = False) -> None:
        self.names = names
        self.down = down
        self.asked: list[str] = []

    def get(self, url: str) -> requests.Response:
        path = url.removeprefix("http://connect:8083")
        self.asked.append(path)
        if self.down:
            raise requests.ConnectionError("refused")
        resp = requests.Response()
        resp.status_code = 200
        if path == "/connectors":
            body: object = self.names
        elif path.endswith("/config"):
            body = {"database.password": PASSWORD, "name": path.split("/")[2]}
        elif path.endswith("/status"):
            body = {"connector": {"state": "RUNNING"}}
        elif path.endswith("/tasks"):
            body = [{"config": {"database.password": PASSWORD}}]
        elif path.startswith("/connectors/missing"):
            resp.status_code, body = 404, {"message": "not found"}
        else:
            body = {"config": {"database.password": PASSWORD}}
        resp._content = orjson.dumps(body)
        return resp


def test_connects_rest_answers_are_read_for_every_connector_and_a_leak_in_them_is_found(state: Path) -> None:
    fake = FakeConnect(["cms-documents", "a b"])
    answers, gaps = connect_answers("http://connect:8083/", get=fake.get)
    assert fake.asked == ["/connectors", *(f"/connectors/cms-documents{s}" for s in CONNECT_PATHS),
                          *(f"/connectors/a%20b{s}" for s in CONNECT_PATHS)]
    assert gaps == [] and len(answers) == 9
    hits, _files, _size = scan(_settings(state), [], answers)
    assert "pg_password in Connect's answer to GET /connectors/cms-documents/config" in hits
    assert "pg_password in Connect's answer to GET /connectors/cms-documents/tasks" in hits
    assert not any("/status" in h for h in hits)


def test_a_worker_that_does_not_answer_is_a_gap_in_the_scan_not_a_clean_one() -> None:
    answers, gaps = connect_answers("http://connect:8083", get=FakeConnect([], down=True).get)
    assert answers == [] and gaps == ["Connect did not answer GET /connectors: ConnectionError"]
    answers, gaps = connect_answers("http://connect:8083", get=FakeConnect(["missing"]).get)
    assert "Connect answered GET /connectors/missing with HTTP 404" in gaps


def test_each_api_token_is_looked_for_alone_from_the_environment_and_the_file(tmp_path: Path) -> None:
    from drills.faults.secrets_scan import secrets_of

    file = tmp_path / "tokens"
    file.write_text("assistant:file-assistant-token-0001\n")
    s = Settings(state_dir=tmp_path, api_tokens=SecretStr("assistant:env-assistant-token-01,operator:env-op/token+0001"),
                 api_tokens_file=file)
    found = secrets_of(s)
    assert found["assistant API token (env:1)"] == "env-assistant-token-01"
    assert found["operator API token (env:2)"] == "env-op/token+0001"
    assert found["operator API token (env:2) (URL-encoded)"] == "env-op%2Ftoken%2B0001"
    assert found["assistant API token (file:1)"] == "file-assistant-token-0001"
    assert "api_tokens" not in found  # the list as a whole is not a secret anyone would print
