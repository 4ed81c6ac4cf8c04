"""Each adapter's part of the settings: the right region's address, nothing else, secrets masked."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest

from regionsync.settings import Settings
from regionsync.settings_parts import KafkaSettings


def settings() -> Settings:
    return Settings(
        regions=["east", "north", "west"], source_region="north",
        kafka_bootstrap="10.0.0.1:9092", pg_host="10.0.0.2", pg_port=5432, pg_password="pg-S3cr3t/@",
        s3_endpoint="http://10.0.0.3:9000", s3_secret_access_key="s3-S3cr3t", milvus_token="mv-S3cr3t",
        milvus_uris={"west": "http://milvus.west:19530"}, session_timeout_ms=7000, fetch_wait_max_ms=33,
    )


def test_kafka_part_is_the_asked_regions_broker_with_the_client_timeouts() -> None:
    s = settings()
    assert s.kafka().bootstrap == "10.0.0.1:9092"  # the source region's, as the flat value says
    assert s.kafka("east").bootstrap == "10.0.0.1:9091"
    assert s.kafka("west").bootstrap == "10.0.0.1:9093"
    assert s.for_region("west").kafka() == s.kafka("west")
    member = s.kafka("west").member("g", {"client.id": "me"})
    assert member["bootstrap.servers"] == "10.0.0.1:9093"
    assert (member["group.id"], member["session.timeout.ms"], member["fetch.wait.max.ms"]) == ("g", 7000, 33)
    assert member["client.id"] == "me"
    reader = s.kafka().reader("label")
    assert reader["enable.auto.commit"] is False and "session.timeout.ms" not in reader
    producer = s.kafka().producer({"linger.ms": 7, "acks": "1"})
    assert (producer["enable.idempotence"], producer["linger.ms"], producer["acks"]) == (False, 7, "1")
    assert producer["max.in.flight.requests.per.connection"] == 1  # order kept across retries
    with pytest.raises(KeyError):
        s.kafka("south")
    with pytest.raises(dataclasses.FrozenInstanceError):
        s.kafka().bootstrap = "x"  # type: ignore[misc]


def test_postgres_part_builds_the_dsn_and_masks_it() -> None:
    s = settings()
    pg = s.postgres("east")
    assert (pg.host, pg.port) == ("10.0.0.2", 5431)
    assert pg.dsn("dialog_east") == "postgresql://regionsync:pg-S3cr3t%2F%40@10.0.0.2:5431/dialog_east"
    assert "S3cr3t" not in pg.dsn_masked("x") and "S3cr3t" not in repr(pg)
    assert s.pg_dsn() == s.postgres().dsn() and s.postgres().port == 5432


def test_object_store_and_milvus_parts_keep_their_secrets_masked() -> None:
    s = settings()
    store = s.object_store("west")
    assert store.endpoint == "http://10.0.0.3:9010" and store.bucket == s.s3_bucket
    assert store.secret_access_key.get_secret_value() == "s3-S3cr3t" and "S3cr3t" not in repr(store)
    milvus = s.milvus("west")
    assert (milvus.uri, milvus.collection, milvus.dim) == ("http://milvus.west:19530", "documents", 384)
    assert s.milvus("east").uri == f"http://127.0.0.1:{s.milvus_base_port}"
    assert "S3cr3t" not in repr(milvus)


def test_a_kafka_part_alone_makes_a_client_config() -> None:
    assert KafkaSettings("h:1").client() == {"bootstrap.servers": "h:1"}


def test_with_tls_every_postgres_dsn_verifies_the_server_with_the_ca(tmp_path: Path) -> None:
    s = Settings(state_dir=tmp_path, tls=True, pg_password="pw")
    pg = s.postgres()
    assert pg.ca_file == tmp_path / "pki" / "ca.pem"
    assert pg.dsn("x").endswith(f"/x?sslmode=verify-full&sslrootcert={tmp_path}/pki/ca.pem")
    assert s.pg_dsn_masked().endswith("?sslmode=verify-full&sslrootcert=" + str(tmp_path / "pki" / "ca.pem"))
    assert "sslmode" not in Settings(state_dir=tmp_path).pg_dsn()
