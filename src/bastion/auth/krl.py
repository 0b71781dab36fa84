"""The cluster's OpenSSH KRL: locks translated into what a stock sshd can enforce.

Layer: auth (reads stores and the audit log; the codec is :mod:`bastion.ca.krl`). Agentless
OpenSSH nodes never see the lock watch, so the auth server publishes a key revocation list
(``GET /v1/ca/krl``) that ``bbot krl-sync`` writes to sshd's ``RevokedKeys`` file.

What a lock becomes (a lock target matches when *all* its fields match)::

    target fields          KRL entry                                      precision
    user                   KEY_ID <user>  (Bastion's key id = user name)  exact, also future certs
    role                   KEY_ID of every user holding the role now,     exact for live certs
                           + SERIAL of every live certificate with it
    login / device /       SERIAL of every live user certificate whose    exact for live certs;
    mfa_device /           issuance (``cert.issued`` audit event) matches  a KRL cannot revoke one
    user_epoch, or any     all the fields                                 principal, so the whole
    mix of user/role/                                                     certificate goes
    login/device/...
    node, session,         nothing: a KRL is cluster-wide and a           reported in ``unenforced``
    bot, access_request    certificate does not carry these; the proxy
                           and agents still enforce them on their paths

"Live" means not yet expired per the audit event. Expired locks are left out, so removing or
expiring a lock restores access at the next sync. Serial look-ups read the audit log, which is
only done when some lock needs it (user-only locks never do).

The KRL itself carries no embedded signature (OpenSSH >= 9.4 would refuse it); it comes with a
detached SSHSIG signature by the SSH user CA (:func:`bastion.ca.krl.sign_krl`), checked by the
sync command against the node's trusted user CA keys.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from bastion.audit.log import AuditQuery
from bastion.auth.server import AuthServer
from bastion.ca import authority as ca_authority
from bastion.ca.krl import build_krl, sign_krl
from bastion.types.access import Lock, LockTarget, User
from bastion.types.audit import AuditEvent

__all__ = ["LiveCert", "PublishedKRL", "krl_for", "lock_entries"]

_CERT_FIELDS = ("user", "role", "login", "device", "mfa_device", "user_epoch")
_UNEXPRESSIBLE = ("node", "session", "bot", "access_request")


@dataclass(frozen=True, slots=True)
class PublishedKRL:
    data: bytes
    """The binary KRL for sshd's ``RevokedKeys``."""
    signature: str
    """Detached SSHSIG (namespace ``bastion-krl``) by the active SSH user CA key."""
    version: int
    generated: datetime
    key_ids: tuple[str, ...]
    serials: tuple[int, ...]
    unenforced: tuple[str, ...]
    """Names of locks in force that a KRL cannot express (see the module docstring)."""


@dataclass(frozen=True, slots=True)
class LiveCert:
    user: str
    serial: int
    roles: frozenset[str]
    logins: frozenset[str]
    device: str
    mfa_device: str = ""
    """The security key the certificate was obtained with (login or per-session MFA)."""
    user_epoch: str = ""
    """The user's epoch at issuance: a reset or deletion locks the certificates of the old one."""


def _in_force(lock: Lock, now: datetime) -> bool:
    expires = lock.metadata.expires
    return expires is None or expires > now


def _matches(target: LockTarget, cert: LiveCert) -> bool:
    return (
        (not target.user or target.user == cert.user)
        and (not target.role or target.role in cert.roles)
        and (not target.login or target.login in cert.logins)
        and (not target.device or target.device == cert.device)
        and (not target.mfa_device or target.mfa_device == cert.mfa_device)
        and (not target.user_epoch or target.user_epoch == cert.user_epoch)
    )


def _live_cert(event: AuditEvent, now: datetime) -> LiveCert | None:
    fields = event.fields
    if fields.get("cert_type") != "user" or event.outcome != "success":
        return None
    try:
        serial = int(str(fields.get("serial", "")))
        expires = datetime.fromisoformat(str(fields.get("expires", "")))
    except ValueError:
        return None
    if serial <= 0 or expires <= now:
        return None
    return LiveCert(
        user=event.user,
        serial=serial,
        roles=frozenset(str(r) for r in fields.get("roles") or ()),
        logins=frozenset(str(p) for p in fields.get("principals") or ()),
        device=event.device_id,
        mfa_device=str(fields.get("mfa_device") or ""),
        user_epoch=str(fields.get("user_epoch") or ""),
    )


async def _live_certs(auth: AuthServer, now: datetime) -> list[LiveCert]:
    events = await auth.audit.search(AuditQuery(types=("cert.issued",), limit=0))
    return [c for c in (_live_cert(e, now) for e in events) if c is not None]


def lock_entries(
    locks: list[Lock], users: list[User], certs: list[LiveCert] | None, now: datetime
) -> tuple[set[str], set[int], list[str]]:
    """Translate locks in force into (key ids, serials, names of unenforceable locks).

    ``certs`` may be None when no lock needs serials (see :func:`_needs_serials`).
    """
    key_ids: set[str] = set()
    serials: set[int] = set()
    unenforced: list[str] = []
    for lock in locks:
        if not _in_force(lock, now):
            continue
        target = lock.spec.target
        if any(getattr(target, name) for name in _UNEXPRESSIBLE):
            unenforced.append(lock.name)
            continue
        set_fields = {name for name in _CERT_FIELDS if getattr(target, name)}
        if set_fields == {"user"}:
            key_ids.add(target.user)
            continue
        if set_fields == {"role"}:
            key_ids.update(u.name for u in users if target.role in u.spec.roles)
        serials.update(c.serial for c in certs or () if _matches(target, c))
    return key_ids, serials, sorted(unenforced)


def _needs_serials(locks: list[Lock], now: datetime) -> bool:
    for lock in locks:
        target = lock.spec.target
        if _in_force(lock, now) and any(
            getattr(target, n) for n in ("role", "login", "device", "mfa_device", "user_epoch")
        ):
            return True
    return False


async def krl_for(auth: AuthServer) -> PublishedKRL:
    """Build and sign the KRL for the current locks.

    The version is the generation time in milliseconds: it grows with every KRL the cluster
    publishes (across auth servers too, as far as their clocks agree).

    Raises:
        NotFound: the SSH user CA does not exist (auth not initialised).
    """
    now = auth.clock.now()
    locks = await auth.locks.list()
    users = await auth.users.list() if any(lk.spec.target.role for lk in locks) else []
    certs = await _live_certs(auth, now) if _needs_serials(locks, now) else None
    key_ids, serials, unenforced = lock_entries(locks, users, certs, now)
    ca = await auth.issuer.ca("ssh_user")
    version = int(now.timestamp() * 1000)
    data = build_krl(
        ca_authority.trusted_public_keys(ca),
        key_ids,
        serials,
        version=version,
        generated=int(now.timestamp()),
        comment=f"bastion cluster {auth.cluster}",
    )
    signature = sign_krl(data, ca_authority.signing_key(ca, auth.deps.kek))
    return PublishedKRL(
        data=data,
        signature=signature,
        version=version,
        generated=now,
        key_ids=tuple(sorted(key_ids)),
        serials=tuple(sorted(serials)),
        unenforced=tuple(unenforced),
    )
