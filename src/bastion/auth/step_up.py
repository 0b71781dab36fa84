"""Step-up MFA demanded by a risk rule: the user's next certificate needs a second factor.

Layer: auth. A risk rule with ``action: step_up`` stores ``risk/step_up/<sha256 of the user>``
(with the rule's ``lock_ttl`` as its expiry) in the same transaction as its ``risk.signal``.
:func:`check_step_up` is called by the issuer before it signs a user certificate: without an
MFA-verified identity (``mfa_device`` or ``mfa_verified``) it refuses (StepUpRequired); with
one it deletes the flag (audited ``risk.step_up``, outcome success) and lets the issuance go.
Renewals are issuances: a flagged user's renewal is refused and the user logs in again with
the second factor. For an SSO login the second factor is the identity provider's: an ID token
whose ``amr`` claim (RFC 8176) says ``mfa`` satisfies the step-up (:func:`idp_second_factor`).
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping, Sequence
from datetime import datetime

from bastion.audit.log import AuditLog
from bastion.backend.base import Delete, Item, Put
from bastion.errors import AuthenticationFailed, CompareFailed, NotFound
from bastion.types.identity import Identity

__all__ = [
    "STEP_UP_PREFIX",
    "StepUpRequired",
    "check_step_up",
    "idp_second_factor",
    "step_up_key",
    "step_up_put",
]

STEP_UP_PREFIX = "risk/step_up/"


class StepUpRequired(AuthenticationFailed):
    """A risk rule demands a second factor for this user's next certificate."""


def step_up_key(user: str) -> str:
    return STEP_UP_PREFIX + hashlib.sha256(user.encode()).hexdigest()[:40]


def step_up_put(user: str, rule: str, signal_time: datetime, expires: datetime) -> Put:
    """The write that demands MFA of ``user``'s next certificate (until ``expires``)."""
    value = json.dumps({"user": user, "rule": rule, "since": signal_time.isoformat()})
    return Put(Item(step_up_key(user), value.encode(), expires=expires))


def idp_second_factor(claims: Mapping[str, Sequence[str]]) -> bool:
    """Did the identity provider authenticate with more than one factor (``amr`` has ``mfa``,
    as Okta, Entra ID and Keycloak send it)?"""
    return "mfa" in claims.get("amr", ())


async def check_step_up(
    audit: AuditLog, identity: Identity, remote_addr: str, *, second_factor: bool = False
) -> None:
    """Refuse a certificate without MFA while a step-up flag stands; clear it with MFA.

    Args:
        second_factor: the login proved a second factor outside the identity (an SSO login
            whose IdP reported MFA).

    Raises:
        StepUpRequired: the user is flagged and this identity carries no second factor.
    """
    if identity.kind != "user":
        return
    key = step_up_key(identity.user)
    try:
        item = await audit.backend.get(key)
    except NotFound:
        return
    if not (identity.mfa_device or identity.mfa_verified or second_factor):
        raise StepUpRequired(
            "a risk rule asks for your second factor: log in again with MFA "
            "(bsh login, with your security key or TOTP code; SSO users: with the identity "
            "provider's MFA)"
        )
    try:
        await audit.commit_change(
            "risk.step_up", [Delete(key, item.revision)], user=identity.user,
            target=f"user/{identity.user}", remote_addr=remote_addr,
            reason="cleared by a certificate issued with a second factor",
        )  # fmt: skip
    except (NotFound, CompareFailed):
        pass  # cleared (or renewed) concurrently
