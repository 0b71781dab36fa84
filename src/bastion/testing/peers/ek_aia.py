"""EK certificates that name their issuer's URL, like real TPM vendors' (for tests).

``swtpm_localca`` signs EK certificates without an Authority Information Access extension.
:func:`manufacture <bastion.testing.peers.swtpm.manufacture>` with ``aia_url`` runs it through
this module instead (``python -m bastion.testing.peers.ek_aia URL swtpm_localca ARGS...``):
swtpm_localca makes the certificate, then :func:`add_aia` re-signs it with the same local CA
key, adding a caIssuers URI, so enrollment can fetch the intermediate the admin did not
configure.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.x509.oid import AuthorityInformationAccessOID

__all__ = ["add_aia", "main"]


def add_aia(cert_der: bytes, key_pem: bytes, url: str) -> bytes:
    """``cert_der`` re-signed by ``key_pem`` (its issuer's key) with a caIssuers ``url``."""
    cert = x509.load_der_x509_certificate(cert_der)
    key = serialization.load_pem_private_key(key_pem, None)
    if not isinstance(key, rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey):
        raise ValueError("the signing key must be RSA or EC")
    builder = (
        x509.CertificateBuilder()
        .subject_name(cert.subject)
        .issuer_name(cert.issuer)
        .public_key(cert.public_key())
        .serial_number(cert.serial_number)
        .not_valid_before(cert.not_valid_before_utc)
        .not_valid_after(cert.not_valid_after_utc)
    )
    for ext in cert.extensions:
        if not isinstance(ext.value, x509.AuthorityInformationAccess):
            builder = builder.add_extension(ext.value, ext.critical)
    access = x509.AccessDescription(
        AuthorityInformationAccessOID.CA_ISSUERS, x509.UniformResourceIdentifier(url)
    )
    builder = builder.add_extension(x509.AuthorityInformationAccess([access]), critical=False)
    return builder.sign(key, hashes.SHA256()).public_bytes(serialization.Encoding.DER)


def _arg(args: list[str], name: str) -> str:
    return args[args.index(name) + 1] if name in args else ""


def main(argv: list[str]) -> int:
    """``URL swtpm_localca ARGS...``: swtpm_localca, then the EK certificate gets the AIA."""
    url, tool, *args = argv
    done = subprocess.run([tool, *args], check=False)
    if done.returncode != 0 or _arg(args, "--type") != "ek":
        return done.returncode
    cert = Path(_arg(args, "--dir")) / "ek.cert"
    settings = {}
    for line in Path(_arg(args, "--configfile")).read_text().splitlines():
        name, _, value = line.partition("=")
        settings[name.strip()] = value.strip()
    key = Path(settings["signingkey"]).read_bytes()
    cert.write_bytes(add_aia(cert.read_bytes(), key, url))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
