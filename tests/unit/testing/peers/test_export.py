from __future__ import annotations

import ssl
from pathlib import Path

from cryptography import x509

from bastion.testing.peers.export import make_pki


def test_pki_chain_verifies_with_stdlib_ssl(tmp_path: Path) -> None:
    pki = make_pki(tmp_path)
    server = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    server.load_cert_chain(pki.server_cert, pki.server_key)
    client = ssl.create_default_context(cafile=pki.ca)
    client.load_cert_chain(pki.client_cert, pki.client_key)
    leaf = x509.load_pem_x509_certificate(pki.server_cert.read_bytes())
    ca = x509.load_pem_x509_certificate(pki.ca.read_bytes())
    leaf.verify_directly_issued_by(ca)
    other = x509.load_pem_x509_certificate(pki.other_ca.read_bytes())
    assert other.subject != ca.subject
