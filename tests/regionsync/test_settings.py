import subprocess
import sys

from regionsync.settings import Settings


def test_secrets_are_masked_everywhere_they_are_shown() -> None:
    s = Settings(pg_password="hunter2-very-secret", milvus_token="tok-123456", s3_secret_access_key="s3-abcdef")
    shown = repr(s) + str(s.public_dict()) + s.pg_dsn_masked()
    for secret in ("hunter2-very-secret", "tok-123456", "s3-abcdef"):
        assert secret not in shown
    assert "hunter2-very-secret" in s.pg_dsn()  # only the DSN handed to psycopg holds it


def test_environment_configures_everything_and_round_trips() -> None:
    env = {"REGIONSYNC_REGIONS": "east,north,west", "REGIONSYNC_MILVUS_URIS": "west=http://milvus-west:19530",
           "REGIONSYNC_TEXT_COLUMNS": "title,body", "REGIONSYNC_PG_PASSWORD": "p@ss/word"}
    s = Settings(**{k.removeprefix("REGIONSYNC_").lower(): v for k, v in env.items()})  # type: ignore[arg-type]
    assert s.regions == ["east", "north", "west"]
    assert s.milvus_uri("west") == "http://milvus-west:19530"
    assert s.milvus_uri("north") == f"http://127.0.0.1:{s.milvus_base_port + 1}"
    assert s.text_columns == ["title", "body"]
    assert "p%40ss%2Fword" in s.pg_dsn()
    again = subprocess.run(
        [sys.executable, "-c", "from regionsync.settings import Settings; s = Settings(); "
         "print(s.regions, s.milvus_uris, s.pg_password.get_secret_value(), s.state_dir)"],
        env=s.child_env(), capture_output=True, text=True, check=True,
    ).stdout
    assert "['east', 'north', 'west']" in again and "p@ss/word" in again and str(s.state_dir) in again


def test_settings_cli_masks_secrets() -> None:
    env = Settings(pg_password="do-not-print-me").child_env()
    out = subprocess.run([sys.executable, "-m", "regionsync.cli", "settings"], env=env, capture_output=True,
                         text=True, check=True)
    assert "do-not-print-me" not in out.stdout + out.stderr
    assert '"pg_password": "***"' in out.stdout
