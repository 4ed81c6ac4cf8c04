"""HTTPS of a region service, without a stack: the local CA `stack up` makes (stack/pki.py), a
real uvicorn serving the real app (a stand-in RegionService behind it) with that certificate, and
the project's client trusting the CA; a client without the CA is refused."""

from __future__ import annotations

import stat
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import requests
import uvicorn
from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID
from pydantic import SecretStr

from regionsync.settings import Settings
from serve.app import create_app
from serve.client import RegionClient
from serve.tls import tls_files
from stack import pki
from stack.procs import free_port

from .test_auth_routes import ASSISTANT, OPERATOR, Stub


def tls_settings(tmp_path: Path, port: int = 0) -> Settings:
    return Settings(state_dir=tmp_path / "state", tls=True, serve_base_port=port or 18700, regions=["east"],
                    api_tokens=SecretStr(f"assistant:{ASSISTANT},operator:{OPERATOR}"))


def test_the_local_ca_issues_a_server_and_client_certificates_and_keeps_them(tmp_path: Path) -> None:
    s = tls_settings(tmp_path)
    root = pki.ensure(s, clients=["mirror-east-north"])
    files = tls_files(s)
    ca = x509.load_pem_x509_certificate(files.ca.read_bytes())
    server = x509.load_pem_x509_certificate(files.cert.read_bytes())
    client = x509.load_pem_x509_certificate((root / "mirror-east-north.pem").read_bytes())
    for leaf in (server, client):
        leaf.verify_directly_issued_by(ca)
    sans = server.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert "localhost" in sans.get_values_for_type(x509.DNSName)
    assert [str(ip) for ip in sans.get_values_for_type(x509.IPAddress)] == ["127.0.0.1"]
    usage = client.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
    assert list(usage) == [ExtendedKeyUsageOID.CLIENT_AUTH]
    assert isinstance(ca.public_key(), ec.EllipticCurvePublicKey)
    for key in (root / "ca.key", files.key, root / "mirror-east-north.key"):
        assert stat.S_IMODE(key.stat().st_mode) == 0o600
    before = files.cert.read_bytes()
    pki.ensure(s)
    assert files.cert.read_bytes() == before  # kept across stack ups
    (root / "ca.key").unlink()
    pki.ensure(s)  # a new CA: everything it signed is issued again
    x509.load_pem_x509_certificate(files.cert.read_bytes()).verify_directly_issued_by(
        x509.load_pem_x509_certificate(files.ca.read_bytes()))


@pytest.fixture
def https_service(tmp_path: Path) -> Iterator[Settings]:
    s = tls_settings(tmp_path, free_port())
    pki.ensure(s)
    files = tls_files(s)
    config = uvicorn.Config(create_app(Stub()), host="127.0.0.1", port=s.serve_port("east"), log_level="warning",
                            ssl_certfile=str(files.cert), ssl_keyfile=str(files.key))
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 20
    while not server.started:
        assert time.monotonic() < deadline, "uvicorn did not start"
        time.sleep(0.05)
    try:
        yield s
    finally:
        server.should_exit = True
        thread.join(10)


def test_the_service_answers_over_https_to_clients_that_trust_the_ca(https_service: Settings) -> None:
    s = https_service
    assert s.serve_url("east").startswith("https://127.0.0.1:")
    client = RegionClient(s, "east")
    assert client.is_up() and client.search("shipping", 3)["hits"] == []
    assert client.conflicts()["count"] == 0  # the operator's token, over the same TLS
    with pytest.raises(requests.exceptions.SSLError):
        requests.get(f"{s.serve_url('east')}/healthz", timeout=10)  # the system's CAs do not know ours
    with pytest.raises(requests.exceptions.ConnectionError):
        requests.get(s.serve_url("east").replace("https://", "http://") + "/healthz", timeout=10)
