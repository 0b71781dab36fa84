"""TLS for the auth API: server context (mTLS optional at the handshake, required per route)
and the client-certificate -> Identity check that keeps trust anchors per purpose."""

from __future__ import annotations

import ssl
from pathlib import Path

from cryptography import x509

from bastion.ca import x509 as ca_x509
from bastion.clock import Clock
from bastion.errors import AccessDenied
from bastion.types.authority import CertAuthority
from bastion.types.identity import Identity

__all__ = ["identity_from_peer", "server_context"]


def server_context(cert_file: Path, key_file: Path, client_ca_pem: str) -> ssl.SSLContext:
    """Server context: our host cert; client certs optional but verified when presented.

    A client certificate from a foreign CA, or an expired one, fails the handshake itself.
    """
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    ctx.load_cert_chain(cert_file, key_file)
    ctx.verify_mode = ssl.CERT_OPTIONAL
    ctx.load_verify_locations(cadata=client_ca_pem)
    ctx.set_alpn_protocols(["http/1.1"])
    return ctx


def identity_from_peer(
    der: bytes, user_ca: CertAuthority, host_ca: CertAuthority, clock: Clock
) -> Identity:
    """Verify a peer certificate under the CA of its purpose and return its identity.

    User/admin identities must chain to the user CA, host identities to the host CA: a
    certificate of one purpose is refused for the other (ARCHITECTURE.md 6.4).

    Raises:
        AccessDenied: with the reason.
    """
    cert = x509.load_der_x509_certificate(der)
    user_anchors = [
        x509.load_pem_x509_certificate(k.cert_pem.encode()) for k in user_ca.spec.trusted_keys()
    ]
    host_anchors = [
        x509.load_pem_x509_certificate(k.cert_pem.encode()) for k in host_ca.spec.trusted_keys()
    ]
    now = clock.now()
    try:
        identity = ca_x509.verify_certificate_chain(cert, user_anchors, now)
        if identity.kind in ("user", "admin", "bot"):
            return identity
        raise AccessDenied(f"a {identity.kind} identity signed by the user CA is not accepted")
    except AccessDenied as user_error:
        try:
            identity = ca_x509.verify_certificate_chain(cert, host_anchors, now)
        except AccessDenied:
            raise user_error from None
        if identity.kind != "host":
            raise AccessDenied(
                f"a {identity.kind} identity signed by the host CA is not accepted"
            ) from None
        return identity
