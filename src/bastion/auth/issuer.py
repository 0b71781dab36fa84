"""Certificate issuance: turn an authenticated principal into SSH + X.509 certificates.

The issuer trusts its caller (login, join and renewal have already authenticated). It computes the
identity document once and writes it into both certificates, audits every certificate it signs
(serial, principals, roles, TTL), and never widens: TTL = min(requested, roles' max_session_ttl),
where a request under one minute counts as one minute (the cap always wins).
"""

from __future__ import annotations

import hashlib
import secrets
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Literal

from cryptography import x509
from cryptography.exceptions import UnsupportedAlgorithm
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ec import EllipticCurvePublicKey
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey
from cryptography.hazmat.primitives.asymmetric.rsa import RSAPublicKey
from cryptography.hazmat.primitives.asymmetric.types import PublicKeyTypes

from bastion.audit.log import AuditLog
from bastion.auth.device_challenge import challenge_key, mint_challenge
from bastion.auth.step_up import check_step_up
from bastion.ca import authority as ca_authority
from bastion.ca import sshcert
from bastion.ca import x509 as ca_x509
from bastion.ca.keys import PublicKey
from bastion.clock import Clock
from bastion.errors import AccessDenied, BadParameter, NotFound
from bastion.rbac.checker import RoleSet
from bastion.rbac.device_trust import KeyAttestation, hardware_key_refusal
from bastion.services.store import ResourceStore
from bastion.types.access import MIN_SESSION_TTL, Role
from bastion.types.authority import CAType, CertAuthority
from bastion.types.identity import Identity

__all__ = ["HostCerts", "Issuer", "UserCerts", "parse_public_key"]

MIN_TTL = MIN_SESSION_TTL
"""A requested TTL below this is raised to it, but never above the roles' cap (roles are
refused below it when written; one stored before that rule keeps its shorter cap)."""


def parse_public_key(text: str) -> PublicKey:
    """Accept an OpenSSH public key line or a PEM SubjectPublicKeyInfo from a client.

    Raises:
        BadParameter: not a supported public key.
    """
    data = text.strip().encode()
    key: PublicKeyTypes
    try:
        if data.startswith(b"-----BEGIN"):
            key = serialization.load_pem_public_key(data)
        else:
            key = serialization.load_ssh_public_key(data)
    except (ValueError, TypeError, UnsupportedAlgorithm) as exc:
        raise BadParameter(
            f"invalid public key: {exc}; send an OpenSSH line (ssh-ed25519 AAAA...) or PEM"
        ) from None
    if not isinstance(key, Ed25519PublicKey | EllipticCurvePublicKey | RSAPublicKey):
        raise BadParameter("unsupported public key type: use Ed25519, ECDSA P-256 or RSA")
    return key


@dataclass(frozen=True, slots=True)
class UserCerts:
    identity: Identity
    ssh_cert: str
    """OpenSSH certificate line (``ssh-ed25519-cert-v01@openssh.com AAAA... user``); empty when
    the identity has no logins."""
    tls_cert: str
    """PEM X.509 certificate."""
    ssh_host_ca: list[str]
    """Host CA public keys (known_hosts ``@cert-authority`` material)."""
    tls_host_ca: str
    """PEM of the host TLS CAs (to verify auth and proxy)."""
    tls_user_ca: str
    device_challenge: str = ""
    """A fresh device challenge for the user (:mod:`bastion.auth.device_challenge`): an
    enrolled machine answers it in one round trip."""
    device_error: str = ""
    """The login's device proof was refused (the certificates carry no device): why."""


@dataclass(frozen=True, slots=True)
class HostCerts:
    identity: Identity
    ssh_cert: str
    tls_cert: str
    ssh_user_ca: list[str]
    ssh_host_ca: list[str]
    tls_host_ca: str
    tls_user_ca: str


def _spki_sha256(key: PublicKey) -> str:
    der = key.public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    return hashlib.sha256(der).hexdigest()


class Issuer:
    def __init__(
        self,
        cas: ResourceStore[CertAuthority],
        kek: bytes,
        clock: Clock,
        audit: AuditLog,
        cluster: str,
        roles: ResourceStore[Role] | None = None,
    ) -> None:
        self._cas = cas
        self._roles = roles
        self._cluster = cluster
        self._kek = kek
        self._challenge_key = challenge_key(kek)
        self._clock = clock
        self._audit = audit

    @staticmethod
    def presented_key_attestation(caller: Identity, key_sha256: str) -> KeyAttestation | None:
        """What vouches for the key of the certificate a caller presented (``key_sha256``; its
        TLS handshake proved it holds that key) when it asks for another certificate (a
        database's, an app's): this issuer wrote ``key_attestation: tpm`` into the caller's
        certificate only for a key the device's AK certified, so that same key stays attested.
        None: the caller's certificate says nothing of the kind."""
        if caller.key_attestation != "tpm" or not caller.device_id or not key_sha256:
            return None
        return KeyAttestation(caller.device_id, "tpm", certified_key_sha256=key_sha256)

    async def _requires_hardware_key(self, identity: Identity) -> bool:
        if self._roles is None or identity.kind not in ("user", "bot"):
            return False
        for name in identity.roles:
            try:
                role = await self._roles.get(name)
            except NotFound:
                continue
            if role.spec.options.require_hardware_key:
                return True
        return False

    async def ca(self, ca_type: CAType) -> CertAuthority:
        return await self._cas.get(ca_authority.ca_name(ca_type, self._cluster))

    async def _trust(self) -> tuple[list[str], list[str], str, str]:
        ssh_user = await self.ca("ssh_user")
        ssh_host = await self.ca("ssh_host")
        tls_host = await self.ca("tls_host")
        tls_user = await self.ca("tls_user")
        return (
            [k.public_key for k in ssh_user.spec.trusted_keys()],
            [k.public_key for k in ssh_host.spec.trusted_keys()],
            "".join(k.cert_pem for k in tls_host.spec.trusted_keys()),
            "".join(k.cert_pem for k in tls_user.spec.trusted_keys()),
        )

    def user_identity(
        self,
        *,
        cluster: str,
        user: str,
        roles: list[str],
        traits: dict[str, list[str]],
        role_set: RoleSet,
        requested_ttl: timedelta,
        kind: Literal["user", "admin", "host", "bot"] = "user",
        pinned_ip: str = "",
        user_epoch: str = "",
    ) -> Identity:
        if not roles:
            raise AccessDenied(
                f"user {user!r} has no roles, so there is nothing to certify; an admin can "
                "assign one with bctl users update --set-roles"
            )
        ttl = min(max(requested_ttl, MIN_TTL), role_set.max_session_ttl())
        return Identity(
            cluster=cluster,
            user=user,
            kind=kind,
            roles=tuple(roles),
            traits={k: tuple(v) for k, v in traits.items()},
            logins=tuple(role_set.allowed_logins()),
            expires=self._clock.now() + ttl,
            pinned_ip=pinned_ip if role_set.options().pin_source_ip else "",
            user_epoch=user_epoch,
        )

    async def issue_user(
        self,
        identity: Identity,
        public_key: str,
        remote_addr: str,
        *,
        second_factor: bool = False,
        key_attestation: KeyAttestation | None = None,
        ssh_public_key: str = "",
    ) -> UserCerts:
        """Sign an SSH and an X.509 user certificate for ``public_key`` carrying ``identity``
        (``second_factor``: the login proved MFA outside the identity, e.g. at the IdP).

        Every user certificate passes here (logins, SSO, renewals, per-session MFA, requests,
        the web terminal), so this is where ``require_hardware_key`` (any of the identity's
        roles) holds: only a key that ``key_attestation`` proves TPM-resident is certified
        (:func:`hardware_key_refusal`).

        ``ssh_public_key``: the SSH certificate's key when it differs from ``public_key`` (the
        X.509 certificate stays on ``public_key``). ``require_hardware_key`` decides on both
        keys, and the identity's ``key_attestation`` says ``tpm`` only when ``key_attestation``
        vouches for both (``bsh login --key-store=tpm`` sends its one TPM-held key as both).

        Raises:
            AccessDenied: the roles require a hardware-held key and this one is not attested.
        """
        subject = parse_public_key(public_key)
        ssh_subject = parse_public_key(ssh_public_key) if ssh_public_key else subject
        refusals = [  # the SSH key, then the TLS key: one refusal is enough
            hardware_key_refusal(True, k, key_attestation)
            for k in dict.fromkeys((_spki_sha256(ssh_subject), _spki_sha256(subject)))
        ]
        refusal = next((r for r in refusals if r is not None), None)
        held = refusal is None
        if identity.key_attestation != ("tpm" if held else ""):  # decided here, never copied
            identity = identity.model_copy(update={"key_attestation": "tpm" if held else ""})
        if refusal is not None and await self._requires_hardware_key(identity):
            raise AccessDenied(refusal.message)
        # a risk rule's MFA demand
        await check_step_up(self._audit, identity, remote_addr, second_factor=second_factor)
        now = self._clock.now()
        ssh_ca = await self.ca("ssh_user")
        tls_ca = await self.ca("tls_user")
        serial = secrets.randbits(63)
        ssh_line = ""
        if identity.logins:  # no logins (e.g. editor only, the local admin): no SSH certificate;
            # an empty principal list would mean "any login" to OpenSSH.
            ssh_blob = sshcert.ssh_user_certificate(
                ca_authority.signing_key(ssh_ca, self._kek),
                ssh_subject,
                identity,
                serial=serial,
                valid_after=now - timedelta(minutes=1),
            )
            ssh_line = sshcert.to_openssh_line(ssh_blob, identity.user)
        tls_cert = ca_x509.issue_user_certificate(
            x509.load_pem_x509_certificate(tls_ca.spec.active_keys[0].cert_pem.encode()),
            ca_authority.signing_key(tls_ca, self._kek),
            subject,
            identity,
            serial=serial,
            not_before=now - timedelta(minutes=1),
        )
        await self._audit_cert(
            "user",
            identity,
            serial,
            remote_addr,
            subject=subject,
            ssh=bool(ssh_line),
            valid_after=now - timedelta(minutes=1),
        )
        user_ca, host_ca, tls_host, tls_user = await self._trust()
        return UserCerts(
            identity=identity,
            ssh_cert=ssh_line,
            tls_cert=tls_cert.public_bytes(serialization.Encoding.PEM).decode(),
            ssh_host_ca=host_ca,
            tls_host_ca=tls_host,
            tls_user_ca=tls_user,
            device_challenge=(
                mint_challenge(self._challenge_key, identity.user, now)
                if identity.kind == "user"
                else ""
            ),
        )

    async def issue_host(
        self,
        identity: Identity,
        public_key: str,
        principals: list[str],
        dns_names: list[str],
        ip_addresses: list[str],
        ttl: timedelta,
        remote_addr: str,
    ) -> HostCerts:
        """Sign an SSH host certificate and an X.509 host certificate for an agent or server."""
        subject = parse_public_key(public_key)
        now = self._clock.now()
        ssh_ca = await self.ca("ssh_host")
        tls_ca = await self.ca("tls_host")
        serial = secrets.randbits(63)
        ssh_blob = sshcert.ssh_host_certificate(
            ca_authority.signing_key(ssh_ca, self._kek),
            subject,
            identity.host_id or identity.user,
            principals,
            serial=serial,
            valid_after=now - timedelta(minutes=1),
            valid_before=now + ttl,
        )
        tls_cert = ca_x509.issue_host_certificate(
            x509.load_pem_x509_certificate(tls_ca.spec.active_keys[0].cert_pem.encode()),
            ca_authority.signing_key(tls_ca, self._kek),
            subject,
            identity.host_id or identity.user,
            dns_names,
            ip_addresses,
            not_before=now - timedelta(minutes=1),
            not_after=now + ttl,
            identity=identity,
        )
        await self._audit_cert(
            "host",
            identity,
            serial,
            remote_addr,
            principals=principals,
            subject=subject,
            ssh=True,
            valid_after=now - timedelta(minutes=1),
        )
        user_ca, host_ca, tls_host, tls_user = await self._trust()
        return HostCerts(
            identity=identity,
            ssh_cert=sshcert.to_openssh_line(ssh_blob, identity.host_id or identity.user),
            tls_cert=tls_cert.public_bytes(serialization.Encoding.PEM).decode(),
            ssh_user_ca=user_ca,
            ssh_host_ca=host_ca,
            tls_host_ca=tls_host,
            tls_user_ca=tls_user,
        )

    async def _audit_cert(
        self,
        kind: str,
        identity: Identity,
        serial: int,
        remote_addr: str,
        principals: list[str] | None = None,
        *,
        subject: PublicKey,
        ssh: bool,
        valid_after: datetime,
    ) -> None:
        """One ``cert.issued`` event per issuance (SSH and X.509 share the serial), with what a
        certificate transparency monitor needs: serial, key id, principals, roles, validity,
        the subject key's fingerprint, device and MFA data."""
        route = identity.route
        await self._audit.emit(
            "cert.issued",
            user=identity.user,
            remote_addr=remote_addr,
            device_id=identity.device_id,
            cert_type=kind,
            identity_kind=identity.kind,
            serial=str(serial),
            key_id=identity.host_id or identity.user if kind == "host" else identity.user,
            ssh=ssh,
            tls=True,
            principals=principals if principals is not None else list(identity.logins),
            roles=list(identity.roles),
            valid_after=valid_after.isoformat(),
            expires=identity.expires.isoformat(),
            ttl_seconds=int((identity.expires - self._clock.now()).total_seconds()),
            public_key_sha256=_spki_sha256(subject),
            device_attestation=identity.device_attestation,
            key_attestation=identity.key_attestation,
            mfa_verified=identity.mfa_verified,
            mfa_scope=identity.mfa_scope,
            mfa_device=identity.mfa_device,
            user_epoch=identity.user_epoch,
            pinned_ip=identity.pinned_ip,
            access_requests=list(identity.access_requests),
            route=route.model_dump(exclude_defaults=True) if route is not None else {},
        )
