"""SCIM bearer tokens (one per SSO connector) and the deprovisioning lock.

Layer: auth. ``bctl scim token --connector=NAME`` creates (or rotates) the connector's token:
the secret is shown once; only its SHA-256 is stored (``scim/tokens/<connector>``), and
:meth:`ScimTokens.authenticate` compares hashes in constant time, also for an unknown
connector (no timing difference between "no such connector" and "wrong secret"). A token is
``<connector>.<secret>``, so the lookup is one read.

:func:`deprovision_lock` is the lock a SCIM deactivation or deletion commits with its change:
it names the user (``connector:userName``), so it ends live sessions through the lock watch
within a second and refuses new certificates (SSO issuance checks locks). Its name is derived
from the connector and user, and its ``created_by`` marks it as SCIM's, so re-activation lifts
exactly this lock and never an administrator's.
"""

from __future__ import annotations

import hashlib
from datetime import datetime, timedelta

from bastion.auth.server import AuthServer
from bastion.errors import AuthenticationFailed, NotFound
from bastion.services.credentials import hash_secret, new_secret, secrets_equal
from bastion.services.store import RESOURCE_PREFIXES, ResourceStore
from bastion.types.access import Lock, LockSpec, LockTarget
from bastion.types.connectors import CONNECTOR_KINDS
from bastion.types.meta import Metadata
from bastion.types.scim import ScimToken, ScimTokenSpec

__all__ = ["SCIM_ACTOR_PREFIX", "ScimTokens", "deprovision_lock", "deprovision_lock_name"]

SCIM_ACTOR_PREFIX = "scim:"
"""Actor of SCIM changes in the audit log and ``created_by`` of its locks: ``scim:<connector>``."""
_DUMMY = hash_secret("bastion-scim-timing-equalizer")


def deprovision_lock_name(connector: str, user_name: str) -> str:
    digest = hashlib.sha256(f"{connector}\0{user_name}".encode()).hexdigest()[:20]
    return f"scim-{connector}-{digest}"


def deprovision_lock(
    connector: str, user_name: str, why: str, now: datetime, ttl: timedelta | None
) -> Lock:
    """The lock that cuts and refuses the SSO user ``connector:user_name``.

    Args:
        why: ``deactivated`` or ``deleted`` (shown to the user whose session ends).
        ttl: None while the user is deactivated (lifted by re-activation); after a deletion,
            how long certificates issued before it can live.
    """
    user = f"{connector}:{user_name}"
    return Lock(
        metadata=Metadata(
            name=deprovision_lock_name(connector, user_name),
            description=f"{user} {why} by the identity provider (SCIM)",
            expires=now + ttl if ttl is not None else None,
        ),
        spec=LockSpec(
            target=LockTarget(user=user),
            message=f"your account was {why} by your identity provider",
            created_by=SCIM_ACTOR_PREFIX + connector,
            created=now,
        ),
    )


class ScimTokens:
    """Per-connector SCIM bearer tokens, stored hashed."""

    def __init__(self, auth: AuthServer) -> None:
        self.auth = auth
        self.store: ResourceStore[ScimToken] = ResourceStore(
            auth.deps.backend, ScimToken, RESOURCE_PREFIXES["scim_token"]
        )

    async def create(self, connector: str, actor: str) -> str:
        """A new token for ``connector`` (replacing any previous one); returns the secret.

        Raises:
            NotFound: no SSO connector of that name.
        """
        if not await self._connector_exists(connector):
            raise NotFound(
                f'no SSO connector "{connector}" (bctl get oidc, saml and github list them)'
            )
        token = f"{connector}.{new_secret(32)}"
        record = ScimToken(
            metadata=Metadata(name=connector),
            spec=ScimTokenSpec(
                token_sha256=hash_secret(token), created_by=actor, created=self.auth.clock.now()
            ),
        )
        await self.auth.audited(
            "scim.token.create",
            [self.store.put_op(record)],
            actor,
            f"scim_token/{connector}",
            connector=connector,
        )
        return token

    async def _connector_exists(self, name: str) -> bool:
        for kind in CONNECTOR_KINDS:
            try:
                await self.auth.store(kind).get(name)
                return True
            except NotFound:
                continue
        return False

    async def authenticate(self, authorization: str) -> str:
        """The connector a ``Bearer`` header's token belongs to.

        Raises:
            AuthenticationFailed: no bearer token, or not a current one.
        """
        scheme, _, token = authorization.partition(" ")
        token = token.strip()
        if scheme.lower() != "bearer" or not token or len(token) > 512:
            raise AuthenticationFailed("SCIM needs an Authorization: Bearer token")
        connector = token.rsplit(".", 1)[0] if "." in token else ""
        stored = _DUMMY
        if connector:
            try:
                stored = (await self.store.get(connector)).spec.token_sha256
            except (NotFound, ValueError):
                stored = _DUMMY
        if not secrets_equal(stored, hash_secret(token)) or stored == _DUMMY:
            raise AuthenticationFailed("invalid SCIM bearer token")
        return connector
