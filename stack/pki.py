"""The embedded stack's local certificate authority: made at ``stack up`` when TLS is on, kept
across restarts (``STATE/pki``, keys owner-only).

One CA (``ca.pem``), a server certificate for the region services (``serve.pem``/``serve.key``,
valid for ``localhost``, ``127.0.0.1`` and the configured service host), and a client certificate
per name asked for (``<name>.pem``/``<name>.key``), e.g. a replicator's for mutual TLS. Keys are
EC P-256; the CA lives 10 years, the others 2 (an operator rotates them by deleting the files
and running ``stack up`` again, the CA's too).
"""

from __future__ import annotations

import datetime as dt
import fcntl
import ipaddress
import os
from collections.abc import Iterable
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from regionsync.settings import Settings
from serve.tls import tls_files

CA_DAYS, LEAF_DAYS = 3650, 730


def ensure(settings: Settings, clients: Iterable[str] = ()) -> Path:
    """The TLS directory with a CA, the services' certificate and one client certificate per name
    in ``clients``; what exists is kept. Returns the directory.

    Under an exclusive lock on ``.lock`` in the directory: the regions start in parallel and each
    asks for the certificates (its Postgres, its broker's edge), and two callers that both found
    no CA would each make one, leaving certificates signed by a CA that is not the one in
    ``ca.pem`` (seen: every replicator's handshake failed with "certificate verify failed")."""
    files = tls_files(settings)
    root = files.ca.parent
    if not root.exists():  # ours: owner-only (a directory the operator named is left as it is)
        root.mkdir(parents=True, mode=0o700, exist_ok=True)
    # Each call opens the file anew, so flock serialises threads of one process as well as
    # processes; the lock goes with the file's closing.
    with open(root / ".lock", "a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        return _ensure(settings, files.ca, files.cert, files.key, root, clients)


def _ensure(settings: Settings, ca_path: Path, cert_path: Path, key_path: Path, root: Path,
            clients: Iterable[str]) -> Path:
    ca_key_path = root / "ca.key"
    if not ca_path.exists() or not ca_key_path.exists():
        for old in [*root.glob("*.pem"), *root.glob("*.key")]:  # signed by a CA that is gone: issued again
            old.unlink()
        new_key = ec.generate_private_key(ec.SECP256R1())
        ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "regionsync local CA")])
        new_ca = (_builder(ca_name, ca_name, new_key.public_key(), CA_DAYS)
                .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
                .add_extension(x509.KeyUsage(digital_signature=False, content_commitment=False, key_encipherment=False,
                                             data_encipherment=False, key_agreement=False, key_cert_sign=True,
                                             crl_sign=True, encipher_only=False, decipher_only=False), critical=True)
                .sign(new_key, hashes.SHA256()))
        _write(ca_key_path, cert_or_key=new_key)
        _write(ca_path, cert_or_key=new_ca)
    ca_key = serialization.load_pem_private_key(ca_key_path.read_bytes(), password=None)
    ca_cert = x509.load_pem_x509_certificate(ca_path.read_bytes())
    assert isinstance(ca_key, ec.EllipticCurvePrivateKey)
    if not cert_path.exists() or not key_path.exists():
        hosts = sorted({"localhost", "127.0.0.1", settings.serve_host} - {"0.0.0.0", ""})
        _issue(ca_cert, ca_key, "regionsync region services", cert_path, key_path, hosts=hosts, server=True)
    for client in clients:
        client_cert, client_key = root / f"{client}.pem", root / f"{client}.key"
        if not client_cert.exists() or not client_key.exists():
            _issue(ca_cert, ca_key, client, client_cert, client_key, hosts=(), server=False)
    return root


def _builder(subject: x509.Name, issuer: x509.Name, public_key: ec.EllipticCurvePublicKey,
             days: int) -> x509.CertificateBuilder:
    now = dt.datetime.now(dt.UTC)
    return (x509.CertificateBuilder().subject_name(subject).issuer_name(issuer).public_key(public_key)
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - dt.timedelta(minutes=5)).not_valid_after(now + dt.timedelta(days=days)))


def _issue(ca_cert: x509.Certificate, ca_key: ec.EllipticCurvePrivateKey, common_name: str, cert_path: Path,
           key_path: Path, hosts: Iterable[str], server: bool) -> None:
    key = ec.generate_private_key(ec.SECP256R1())
    names: list[x509.GeneralName] = []
    for host in hosts:
        try:
            names.append(x509.IPAddress(ipaddress.ip_address(host)))
        except ValueError:
            names.append(x509.DNSName(host))
    builder = (_builder(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)]), ca_cert.subject,
                        key.public_key(), LEAF_DAYS)
               .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
               .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH if server
                                                     else ExtendedKeyUsageOID.CLIENT_AUTH]), critical=False))
    if names:
        builder = builder.add_extension(x509.SubjectAlternativeName(names), critical=False)
    cert = builder.sign(ca_key, hashes.SHA256())
    _write(key_path, cert_or_key=key)
    _write(cert_path, cert_or_key=cert)


def _write(path: Path, cert_or_key: x509.Certificate | ec.EllipticCurvePrivateKey) -> None:
    if isinstance(cert_or_key, x509.Certificate):
        path.write_bytes(cert_or_key.public_bytes(serialization.Encoding.PEM))
        return
    data = cert_or_key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                     serialization.NoEncryption())
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as f:
        f.write(data)
