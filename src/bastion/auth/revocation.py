"""User epochs: how a reset, a deletion or a narrowing change revokes what was issued before it.

Layer: auth (pure: values in, values out). Every user carries a random ``spec.epoch``; every
certificate and web session carries the epoch it was issued in. The authentication gate
(:mod:`bastion.auth.gate`) refuses any other epoch on the API, the web pages and the proxy. For
the places that never ask auth (nodes checking SSH certificates themselves, agentless OpenSSH
through the KRL) and for live sessions, the old epoch is also *locked*: a lock on
``user=NAME, user_epoch=OLD`` travels through the existing lock watch, ends live sessions
within a second and reaches the KRL as the serials of that epoch's certificates.
"""

from __future__ import annotations

import hashlib
import secrets
from collections.abc import Iterable
from datetime import datetime, timedelta

from bastion.types.access import Lock, LockSpec, LockTarget, Role, User, UserSpec
from bastion.types.meta import Metadata

__all__ = [
    "CLOCK_SKEW",
    "longest_certificate_ttl",
    "narrows",
    "new_epoch",
    "revocation_lock",
    "sso_removal_lock",
]

CLOCK_SKEW = timedelta(minutes=5)
"""Added to a revocation lock's lifetime: certificates are valid from a minute before issuance,
and hosts' clocks drift."""


def new_epoch() -> str:
    """A fresh, unguessable epoch (128 bits)."""
    return secrets.token_hex(16)


def narrows(old: UserSpec, new: UserSpec) -> bool:
    """Does ``new`` take away anything ``old`` granted (a role, or any value of any trait:
    logins, db users, groups used by role templates)? Adding never narrows."""
    if set(old.roles) - set(new.roles):
        return True
    return any(set(values) - set(new.traits.get(key, ())) for key, values in old.traits.items())


def longest_certificate_ttl(roles: Iterable[Role]) -> timedelta:
    """The longest a user certificate issued under any of these roles can live: certificates
    are capped by the shortest ``max_session_ttl`` of the holder's roles, so no certificate
    outlives the longest one of all roles."""
    return max((r.spec.options.max_session_ttl for r in roles), default=timedelta(hours=12))


def revocation_lock(user: User, why: str, actor: str, now: datetime, ttl: timedelta) -> Lock | None:
    """The lock that revokes every certificate of ``user``'s current epoch, or None for a user
    stored before epochs existed (nothing to name; the gate still refuses them on every path
    that asks auth).

    Args:
        why: ``reset``, ``deletion`` or ``access change``: shown to the user whose session ends.
        ttl: how long certificates of the epoch can still be valid
            (:func:`longest_certificate_ttl`); the lock expires after them.
    """
    epoch = user.spec.epoch
    if not epoch:
        return None
    return Lock(
        metadata=Metadata(
            name=f"revoked-{user.name}-{epoch[:12]}",
            description=f"certificates of {user.name} issued before the {why}",
            expires=now + ttl + CLOCK_SKEW,
        ),
        spec=LockSpec(
            target=LockTarget(user=user.name, user_epoch=epoch),
            message=f"your access changed ({why} of {user.name}); log in again",
            created_by=actor,
            created=now,
        ),
    )


def sso_removal_lock(user: str, actor: str, now: datetime, ttl: timedelta) -> Lock:
    """The lock ``bctl users rm connector:name`` commits for an SSO user (who has no stored
    record to delete): it ends their live sessions through the lock watch and refuses new
    certificates until every certificate issued before it has expired (``ttl``: the longest a
    certificate can live); after that the identity provider alone decides."""
    digest = hashlib.sha256(user.encode()).hexdigest()[:16]
    return Lock(
        metadata=Metadata(
            name=f"removed-{digest}",
            description=f"SSO user {user} removed by {actor}",
            expires=now + ttl + CLOCK_SKEW,
        ),
        spec=LockSpec(
            target=LockTarget(user=user),
            message=f"your access was removed by an administrator ({user})",
            created_by=actor,
            created=now,
        ),
    )
