"""Database certificates: a user's certificate routed to one database, and the db CA's leaves.

Layer: auth (trusted core; the API handlers in :mod:`bastion.api.db` pass the caller's verified
identity). Three issuances:

* :meth:`DbCerts.user_cert`: derived from the *caller's certificate identity*, narrowed to a
  route (``db_service``, ``db_user``, ``db_name``) and never longer-lived than that certificate.
  It is signed by the user TLS CA, like any user certificate: the proxy authorizes the route
  (RBAC over the database's labels, db users and db names, locks) on every connection, so a
  certificate never outlives a change of roles.
* :meth:`DbCerts.server_cert`: a database server's certificate, signed by the ``db`` CA, for an
  admin (``bctl auth sign --format=db``).
* :meth:`DbCerts.agent_cert`: a short client certificate (CN = database user) signed by the
  ``db`` CA, for a database agent (host identity with the ``db`` role).

Every certificate is audited as ``cert.issued`` (the user's through the issuer, the db CA's
leaves here, with serial and subject key fingerprint).
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from datetime import datetime, timedelta

from cryptography import x509
from cryptography.hazmat.primitives import serialization

from bastion.auth.issuer import parse_public_key
from bastion.auth.server import AuthServer
from bastion.ca import authority as ca_authority
from bastion.ca.db import issue_db_client_certificate, issue_db_server_certificate
from bastion.errors import AccessDenied
from bastion.types.authority import CertAuthority
from bastion.types.identity import Identity, RouteToTarget

__all__ = ["AGENT_CERT_TTL", "DbCertificate", "DbCerts"]

AGENT_CERT_TTL = timedelta(hours=1)
"""Validity of a database agent's client certificate (it asks again before it runs out)."""
_SKEW = timedelta(minutes=1)


@dataclass(frozen=True, slots=True)
class DbCertificate:
    cert_pem: str
    ca_pem: str
    expires: datetime


class DbCerts:
    def __init__(self, auth: AuthServer) -> None:
        self._auth = auth

    async def user_cert(
        self,
        caller: Identity,
        public_key: str,
        db_service: str,
        db_user: str,
        db_name: str,
        ttl: timedelta,
        remote_addr: str,
        presented_key_sha256: str = "",
    ) -> DbCertificate:
        """A user TLS certificate with the caller's identity and a route to one database.
        ``presented_key_sha256``: the key of the caller's certificate, attested for
        ``require_hardware_key`` when that certificate says so (a TPM-held key asking for
        itself: :meth:`~bastion.auth.issuer.Issuer.presented_key_attestation`).

        Raises:
            AccessDenied: the caller is not a user or bot.
            BadParameter: an invalid public key.
        """
        if caller.kind not in ("user", "admin", "bot"):
            raise AccessDenied("only users and bots get database certificates")
        auth = self._auth
        now = auth.clock.now()
        expires = min(caller.expires, now + max(ttl, timedelta(minutes=1)))
        route = RouteToTarget(
            cluster=caller.cluster, db_service=db_service, db_user=db_user, db_name=db_name
        )
        identity = caller.model_copy(update={"route": route, "expires": expires})
        attested = auth.issuer.presented_key_attestation(caller, presented_key_sha256)
        certs = await auth.issuer.issue_user(
            identity, public_key, remote_addr, key_attestation=attested
        )
        return DbCertificate(certs.tls_cert, certs.tls_host_ca, expires)

    async def server_cert(
        self,
        host: str,
        public_key: str,
        dns_names: list[str],
        ip_addresses: list[str],
        ttl: timedelta,
        actor: str,
        remote_addr: str,
    ) -> DbCertificate:
        """A database server certificate signed by the db CA."""
        auth = self._auth
        subject = parse_public_key(public_key)
        ca = await auth.issuer.ca("db")
        ca_cert = x509.load_pem_x509_certificate(ca.spec.active_keys[0].cert_pem.encode())
        now = auth.clock.now()
        cert = issue_db_server_certificate(
            ca_cert,
            ca_authority.signing_key(ca, auth.deps.kek),
            subject,
            host,
            dns_names,
            ip_addresses,
            now - _SKEW,
            now + ttl,
        )
        return await self._done(cert, ca, "db_server", actor, host, remote_addr)

    async def agent_cert(
        self, agent: Identity, db_user: str, public_key: str, remote_addr: str
    ) -> DbCertificate:
        """A client certificate (CN = ``db_user``) for a database agent.

        Raises:
            AccessDenied: the caller is not a host with the ``db`` role.
        """
        if agent.kind != "host" or "db" not in agent.roles:
            raise AccessDenied("only database agents (joined with the db role) get these")
        auth = self._auth
        subject = parse_public_key(public_key)
        ca = await auth.issuer.ca("db")
        ca_cert = x509.load_pem_x509_certificate(ca.spec.active_keys[0].cert_pem.encode())
        now = auth.clock.now()
        cert = issue_db_client_certificate(
            ca_cert,
            ca_authority.signing_key(ca, auth.deps.kek),
            subject,
            db_user,
            now - _SKEW,
            now + AGENT_CERT_TTL,
        )
        return await self._done(cert, ca, "db_client", agent.user, db_user, remote_addr)

    async def _done(
        self,
        cert: x509.Certificate,
        ca: CertAuthority,
        kind: str,
        actor: str,
        subject_name: str,
        remote_addr: str,
    ) -> DbCertificate:
        der = cert.public_key().public_bytes(
            serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
        )
        await self._auth.audit.emit(
            "cert.issued",
            user=actor,
            remote_addr=remote_addr,
            cert_type=kind,
            serial=str(cert.serial_number),
            key_id=subject_name,
            principals=[subject_name],
            ssh=False,
            tls=True,
            valid_after=cert.not_valid_before_utc.isoformat(),
            expires=cert.not_valid_after_utc.isoformat(),
            public_key_sha256=hashlib.sha256(der).hexdigest(),
        )
        bundle = "".join(k.cert_pem for k in ca.spec.trusted_keys())
        return DbCertificate(
            cert.public_bytes(serialization.Encoding.PEM).decode(),
            bundle,
            cert.not_valid_after_utc,
        )
