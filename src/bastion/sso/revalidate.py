"""Periodic re-validation of OIDC logins, for identity providers that do not push SCIM.

Layer: sso (over the auth server). An OIDC login whose connector has a ``revalidate_interval``
(default 15 min) and whose user is not SCIM-provisioned gets a fresh *login epoch* in its
certificate and stores a :class:`Grant` (``sso/revalidate/<connector>/<epoch>``: the tokens the
provider gave, the roles the login mapped, expiring with the login) in the same transaction as
its ``sso.login`` event. :class:`Revalidator` re-checks each grant every interval while it lives:

* with a refresh token: the token endpoint (``grant_type=refresh_token``); a refusal
  (``invalid_grant``, HTTP 400/401) means the provider no longer knows the user or revoked the
  grant; then the userinfo endpoint with the new access token gives the current claims;
* without one: the userinfo endpoint with the login's access token while it is valid (HTTP 401
  means the user is gone); once it has expired the grant cannot be checked and is dropped.

A user the provider no longer knows, or whose claims no longer map to one of the login's roles
(judged only when the answer carries a claim the connector maps: some providers leave groups
out of userinfo),
gets the treatment of a SCIM deactivation: a lock on ``user`` + the login's epoch until the
login expires (live sessions end through the lock watch; the certificates are refused), and the
grant is deleted, in one audited ``sso.revalidate`` transaction. The user may log in again (the
provider decides; a new login maps the current groups). A provider that cannot be reached is
retried next interval (fail open, logged). Rotated refresh tokens are stored back (audited).
"""

from __future__ import annotations

import asyncio
import hashlib
from dataclasses import dataclass
from datetime import datetime, timedelta

import structlog
from pydantic import ValidationError

from bastion.auth.revocation import CLOCK_SKEW, new_epoch
from bastion.auth.server import AuthServer
from bastion.backend.base import Delete, Item, Op, Put, key
from bastion.errors import BastionError, CompareFailed, ConnectionProblem, NotFound
from bastion.sso.http import HTTP, IdPRefused
from bastion.sso.mapping import SSOIdentity, TokenSet, map_roles
from bastion.sso.oidc import OIDCProvider
from bastion.sso.scim import connector_rules
from bastion.types.access import Lock, LockSpec, LockTarget
from bastion.types.connectors import OIDCConnector
from bastion.types.meta import Metadata, StrictModel

__all__ = [
    "PREFIX",
    "Grant",
    "Revalidator",
    "Verdict",
    "check_grant",
    "grant_op",
    "login_epoch",
    "revalidation_lock",
]

log = structlog.get_logger("bastion.sso.revalidate")
PREFIX = "sso/revalidate/"
ACTOR_PREFIX = "revalidate:"
TICK = timedelta(seconds=2)
"""How often the revalidator looks for grants that are due."""


class Grant(StrictModel):
    """What re-validation keeps of one OIDC login (stored until the login expires)."""

    connector: str
    username: str
    subject: str
    epoch: str
    roles: list[str]
    access_token: str = ""
    access_expires: datetime | None = None
    refresh_token: str = ""
    expires: datetime
    """The login's expiry (its renewals cannot go past it)."""

    @property
    def user(self) -> str:
        return f"{self.connector}:{self.username}"

    @property
    def key(self) -> str:
        return key("sso", "revalidate", self.connector, self.epoch)


@dataclass(frozen=True, slots=True)
class Verdict:
    state: str
    """``ok``, ``refreshed`` (ok, and the grant's tokens changed), ``gone``, ``changed`` or
    ``unchecked`` (no usable token left)."""
    reason: str = ""
    grant: Grant | None = None
    """The updated grant (``refreshed``)."""


def login_epoch(connector: object, tokens: TokenSet | None) -> str:
    """A fresh epoch for an OIDC login that will be re-validated ("" when it will not be)."""
    if not isinstance(connector, OIDCConnector) or tokens is None:
        return ""
    if connector.spec.revalidate_interval <= timedelta(0):
        return ""
    if not tokens.refresh_token and not tokens.access_token:
        return ""
    return new_epoch()


def grant_op(
    identity: SSOIdentity, epoch: str, roles: list[str], expires: datetime, now: datetime
) -> Put | None:
    """The write that stores a login's grant (None: the login is not re-validated)."""
    tokens = identity.tokens
    if not epoch or tokens is None:
        return None
    grant = Grant(
        connector=identity.connector,
        username=identity.username,
        subject=identity.subject,
        epoch=epoch,
        roles=sorted(roles),
        access_token=tokens.access_token,
        access_expires=now + timedelta(seconds=tokens.expires_in)
        if tokens.expires_in is not None
        else None,
        refresh_token=tokens.refresh_token,
        expires=expires,
    )
    return Put(Item(grant.key, grant.model_dump_json().encode(), expires=expires + CLOCK_SKEW))


def revalidation_lock(grant: Grant, reason: str, now: datetime) -> Lock:
    """The lock that ends one login's certificates (user + login epoch) until it expires."""
    digest = hashlib.sha256(grant.user.encode()).hexdigest()[:12]
    return Lock(
        metadata=Metadata(
            name=f"revalidate-{grant.connector}-{digest}-{grant.epoch[:12]}",
            description=f"{grant.user}: {reason} (OIDC re-validation)",
            expires=max(grant.expires, now) + CLOCK_SKEW,
        ),
        spec=LockSpec(
            target=LockTarget(user=grant.user, user_epoch=grant.epoch),
            message="your identity provider no longer vouches for this login; log in again",
            created_by=ACTOR_PREFIX + grant.connector,
            created=now,
        ),
    )


async def check_grant(
    provider: OIDCProvider, connector: OIDCConnector, grant: Grant, now: datetime
) -> Verdict:
    """Ask the provider about one grant.

    Raises:
        ConnectionProblem: the provider could not be reached (retry later).
    """
    updated: Grant | None = None
    access = grant.access_token
    try:
        if grant.refresh_token:
            tokens = await provider.refresh(grant.refresh_token)
            access = tokens.access_token
            updated = grant.model_copy(
                update={
                    "access_token": tokens.access_token,
                    "refresh_token": tokens.refresh_token or grant.refresh_token,
                    "access_expires": now + timedelta(seconds=tokens.expires_in)
                    if tokens.expires_in is not None
                    else None,
                }
            )
        elif not access or (grant.access_expires is not None and grant.access_expires <= now):
            return Verdict("unchecked", "the login's access token expired (no refresh token)")
        claims = await provider.userinfo(access)
    except IdPRefused as exc:
        if exc.status in (400, 401, 403) or exc.error == "invalid_grant":
            return Verdict("gone", f"the identity provider refused the login's grant: {exc}")
        raise ConnectionProblem(str(exc)) from None
    subject = (claims.get("sub") or [""])[0]
    if subject and subject != grant.subject:
        return Verdict("gone", "the provider answers for another subject")
    rules = connector_rules(connector)
    if not {r.claim for r in rules} & claims.keys():  # userinfo without the mapped claims
        dropped: list[str] = []  # (Entra ID: no groups there): membership cannot be judged
    else:
        dropped = sorted(set(grant.roles) - set(map_roles(rules, claims)))
    if dropped:
        return Verdict("changed", f"the user's claims no longer map to {', '.join(dropped)}")
    if updated is not None and updated.refresh_token != grant.refresh_token:
        return Verdict("refreshed", grant=updated)
    return Verdict("ok")


class Revalidator:
    """Re-checks live OIDC grants at their connector's interval (a task of the auth process)."""

    def __init__(self, auth: AuthServer, http: HTTP | None = None, tick: timedelta = TICK) -> None:
        self.auth = auth
        self.http = http or HTTP()
        self.tick = tick
        self._due: dict[str, datetime] = {}
        self.checked = 0

    async def _connector(self, name: str) -> OIDCConnector | None:
        try:
            found = await self.auth.store("oidc").get(name)
        except NotFound:
            return None
        return found if isinstance(found, OIDCConnector) else None

    async def step(self) -> list[tuple[str, Verdict]]:
        """Check the grants that are due; returns ``(user, verdict)`` of each check."""
        now = self.auth.clock.now()
        items = await self.auth.deps.backend.get_range(PREFIX)
        self._due = {i.key: self._due[i.key] for i in items if i.key in self._due}
        connectors: dict[str, OIDCConnector | None] = {}
        out: list[tuple[str, Verdict]] = []
        for item in items:
            try:
                grant = Grant.model_validate_json(item.value)
            except ValidationError:
                continue
            if grant.connector not in connectors:
                connectors[grant.connector] = await self._connector(grant.connector)
            connector = connectors[grant.connector]
            if connector is None or connector.spec.revalidate_interval <= timedelta(0):
                continue
            interval = connector.spec.revalidate_interval
            due = self._due.setdefault(item.key, now + interval)
            if due > now:
                continue
            self._due[item.key] = now + interval
            provider = OIDCProvider(connector, self.http)
            try:
                verdict = await check_grant(provider, connector, grant, now)
            except ConnectionProblem as exc:
                log.warning("cannot re-validate; retrying later", user=grant.user, error=str(exc))
                continue
            self.checked += 1
            try:
                await self._apply(grant, item, verdict)
            except (NotFound, CompareFailed):
                continue  # another auth server (HA) handled this grant meanwhile
            out.append((grant.user, verdict))
        return out

    async def _apply(self, grant: Grant, item: Item, verdict: Verdict) -> None:
        actor = ACTOR_PREFIX + grant.connector
        ops: list[Op]
        if verdict.state in ("gone", "changed"):
            lock = revalidation_lock(grant, verdict.reason, self.auth.clock.now())
            ops = [self.auth.locks.put_op(lock), Delete(item.key, item.revision)]
            await self.auth.audited(
                "sso.revalidate", ops, actor, grant.user, outcome="failure",
                connector=grant.connector, subject=grant.user, verdict=verdict.state,
                lock=lock.name, reason=verdict.reason,
            )  # fmt: skip
            log.warning("SSO login revoked by re-validation", user=grant.user, why=verdict.reason)
        elif verdict.state == "unchecked":
            await self.auth.audited(
                "sso.revalidate", [Delete(item.key, item.revision)], actor, grant.user,
                connector=grant.connector, subject=grant.user, verdict="unchecked",
                reason=verdict.reason,
            )  # fmt: skip
        elif verdict.state == "refreshed" and verdict.grant is not None:
            new = verdict.grant
            put = Put(Item(new.key, new.model_dump_json().encode(), expires=item.expires))
            await self.auth.audited(
                "sso.revalidate", [put], actor, grant.user,
                connector=grant.connector, subject=grant.user, verdict="refreshed",
            )  # fmt: skip

    async def run_forever(self) -> None:
        while True:
            try:
                await self.step()
            except BastionError as exc:
                log.error("re-validation failed; retrying", error=exc.message)
            await asyncio.sleep(self.tick.total_seconds())
