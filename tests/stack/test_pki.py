"""The local CA (stack/pki.py): callers that ask for the certificates at the same moment (the
regions start in parallel) get one CA, and every certificate chains to the CA in ca.pem."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import ec

from regionsync.settings import Settings
from stack import pki


def _signed_by(cert_path: Path, ca: x509.Certificate) -> bool:
    cert = x509.load_pem_x509_certificate(cert_path.read_bytes())
    key = ca.public_key()
    assert isinstance(key, ec.EllipticCurvePublicKey) and cert.signature_hash_algorithm is not None
    try:
        key.verify(cert.signature, cert.tbs_certificate_bytes, ec.ECDSA(cert.signature_hash_algorithm))
    except Exception:  # noqa: BLE001 - InvalidSignature: another CA signed it
        return False
    return True


def test_parallel_callers_get_one_ca_and_certificates_that_chain_to_it(tmp_path: Path) -> None:
    settings = Settings(state_dir=tmp_path / "state")
    with ThreadPoolExecutor(8) as pool:
        roots = list(pool.map(lambda _i: pki.ensure(settings, clients=("mirror",)), range(16)))
    root = roots[0]
    assert set(roots) == {root}
    ca = x509.load_pem_x509_certificate((root / "ca.pem").read_bytes())
    assert _signed_by(root / "serve.pem", ca) and _signed_by(root / "mirror.pem", ca)
    assert (root / "ca.key").stat().st_mode & 0o077 == 0 and (root / "mirror.key").stat().st_mode & 0o077 == 0
    before = (root / "ca.pem").read_bytes()
    pki.ensure(settings, clients=("mirror",))  # what exists is kept
    assert (root / "ca.pem").read_bytes() == before
