"""The links between regions are mutual TLS (stack/edge.py, stack/postgres.py): a client in another
region reads a region's broker through its edge and its database as the link role, with the stack
CA's client certificate; a client without it, or without TLS, is refused. One real region
(object store, Postgres, broker, edge) in a temporary state dir."""

from __future__ import annotations

import socket
import ssl
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psycopg
import pytest
from confluent_kafka import Consumer, Producer, TopicPartition

from regionsync.pgdb import link_dsn, region_dsn
from regionsync.settings import Settings
from stack import edge
from tests.stacks import free_settings, regions_up

pytestmark = pytest.mark.integration  # starts a real object store, Postgres, broker and edge

TOPIC = "link-test"
N = 50


@pytest.fixture(scope="module")
def region(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Settings]:
    settings = free_settings(tmp_path_factory.mktemp("links") / "state", regions=["east", "north"], link_tls=True)
    with regions_up(settings, ["east"]) as s:
        producer = Producer(s.kafka("east").producer())
        for i in range(N):
            producer.produce(TOPIC, key=f"k{i}".encode(), value=f"v{i}".encode(), partition=0)
        assert producer.flush(30) == 0
        yield s


def _read(config: dict[str, Any], seconds: float = 20.0) -> list[bytes]:
    consumer = Consumer({**config, "group.id": "link-test", "enable.auto.commit": False,
                         "auto.offset.reset": "earliest", "socket.connection.setup.timeout.ms": 3000})
    consumer.assign([TopicPartition(TOPIC, 0, 0)])
    values: list[bytes] = []
    deadline = time.monotonic() + seconds
    try:
        while len(values) < N and time.monotonic() < deadline:
            msg = consumer.poll(0.5)
            if msg is not None and not msg.error():
                values.append(msg.value())
    finally:
        consumer.close()
    return values


def test_a_replicator_reads_another_regions_broker_through_its_edge(region: Settings) -> None:
    config = region.kafka_link("east").client()
    assert config["bootstrap.servers"] == region.kafka_links["east"] != region.kafka_bootstraps["east"]
    assert config["security.protocol"] == "SSL"
    assert _read(config) == [f"v{i}".encode() for i in range(N)]  # and only through the edge: the broker list names it


@pytest.mark.parametrize("drop", ["ssl.certificate.location", "ssl.ca.location"])
def test_a_client_without_the_certificate_or_the_ca_gets_nothing(region: Settings, drop: str) -> None:
    config = region.kafka_link("east").client()
    if drop == "ssl.certificate.location":
        config.pop("ssl.key.location")
    config.pop(drop)
    assert _read(config, seconds=8) == []


def test_the_edge_refuses_a_tls_client_without_a_certificate_and_plain_kafka(region: Settings, tmp_path: Path) -> None:
    host, port = edge.address(region, "east")
    ctx = ssl.create_default_context(cafile=str(region.tls_root() / "ca.pem"))  # trusts the CA, shows no certificate
    with socket.create_connection((host, port), timeout=5) as raw, ctx.wrap_socket(raw, server_hostname=host) as tls:
        with pytest.raises((ssl.SSLError, ConnectionError, OSError)):
            tls.sendall(b"\x00\x00\x00\x0a" + b"\x00" * 10)
            if not tls.recv(4):  # TLS 1.3: the refusal of the certificate arrives with the first read
                raise ConnectionError("closed")
    with socket.create_connection((host, port), timeout=5) as plain:  # an ApiVersions request in clear
        plain.sendall(b"\x00\x00\x00\x0e\x00\x12\x00\x00\x00\x00\x00\x01\x00\x04test")
        try:
            answer = plain.recv(4096)
        except ConnectionResetError:
            answer = b""
        assert not answer.startswith(b"\x00")  # nothing, or a TLS alert (0x15): never a Kafka answer


def test_the_link_role_reads_by_certificate_only_and_cannot_write(region: Settings) -> None:
    with psycopg.connect(region_dsn(region, "east"), autocommit=True) as own:
        own.execute("CREATE TABLE IF NOT EXISTS link_probe (x int)")
        own.execute("INSERT INTO link_probe VALUES (1)")
    dsn = link_dsn(region, "east")
    assert "sslcert=" in dsn and region.link_pg_user in dsn
    with psycopg.connect(dsn, connect_timeout=5, autocommit=True) as link:
        assert link.execute("SELECT count(*) FROM link_probe").fetchone() == (1,)
        ssl_on = link.execute("SELECT ssl, client_dn FROM pg_stat_ssl WHERE pid = pg_backend_pid()").fetchone()
        assert ssl_on is not None and ssl_on[0] is True and "mirror" in str(ssl_on[1])
        with pytest.raises(psycopg.errors.InsufficientPrivilege):
            link.execute("INSERT INTO link_probe VALUES (2)")
    without_cert = dsn.split("&sslcert=")[0]
    with pytest.raises(psycopg.OperationalError):
        psycopg.connect(without_cert, connect_timeout=5)
    plain = dsn.split("?")[0] + "?sslmode=disable"
    with pytest.raises(psycopg.OperationalError, match="reject|no pg_hba|authentication"):
        psycopg.connect(plain, connect_timeout=5)
